// The page is served by Vite; its /langgraph requests go to runyard (same
// origin for the browser, so no CORS setting is needed on the server).
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const runyard = process.env.RUNYARD_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  server: { proxy: { "/langgraph": runyard } },
  preview: { proxy: { "/langgraph": runyard } },
});
