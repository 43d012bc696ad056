"""``python -m tests.serve``: the test app served with settings from RUNYARD_* variables."""

from runyard import Settings
from runyard.server import serve
from tests.apps import build_app

if __name__ == "__main__":
    serve(build_app(Settings()))
