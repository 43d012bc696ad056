// The page calls /v1/ai-sdk/... on its own origin; Vite passes those requests on to
// the runyard server (RUNYARD_URL, default `runyard demo`'s), both for `npm run dev`
// and for `npm run preview` of the built page, so no CORS setting is needed.
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const runyard = process.env.RUNYARD_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  server: { proxy: { "/v1": runyard } },
  preview: { proxy: { "/v1": runyard } },
});
