"""The API's documentation pages, /docs (Swagger UI) and /redoc (ReDoc), from this service's own
files: FastAPI's defaults load their scripts, styles and fonts from public CDNs, which leaves a
blank page wherever there is no internet. The vendored copies are in app/static/vendor."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.routes.dashboard import STATIC

router = APIRouter(tags=["docs"])

# As strict as the dashboard's: scripts from this service only (each page's set-up is a file, not
# an inline script). Swagger UI draws its icons as data: images; ReDoc runs its search index in a
# worker it creates from a blob: URL of its own code; both set inline styles.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; font-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/docs", response_class=FileResponse, include_in_schema=False)
async def swagger_ui() -> FileResponse:
    """Try the API from the browser: every operation, its schemas and examples."""
    return FileResponse(STATIC / "docs" / "swagger.html", media_type="text/html", headers=_HEADERS)


@router.get("/redoc", response_class=FileResponse, include_in_schema=False)
async def redoc() -> FileResponse:
    """The same document as one readable page."""
    return FileResponse(STATIC / "docs" / "redoc.html", media_type="text/html", headers=_HEADERS)
