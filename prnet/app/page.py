"""The web page of ``prnet-app`` (NiceGUI: FastAPI + Vue/Quasar, with three.js for the 3D view, all
served from the installed package: the page loads nothing from the internet).

Tabs: **Photo** (upload → overlay, an interactive 3D view of the vertex-coloured ``.glb`` mesh:
drag to rotate, wheel to zoom; the 68 landmarks, the pose, the depth image, a face selector, and a
zip of every file written), **Swap** (two photos → the reference's face painted onto the target's) and
**Video** (upload a short clip → the annotated H.264 video playing
in the page, and the tracks ``.csv`` / ``.npz``). Errors show as a red line in the page (class
``prnet-error``); results of an untrained network carry a red banner (class ``prnet-banner``).
Result files are served from the service's work folder at ``/results/<id>/<file>``.
"""

import math
import re
import tempfile
from pathlib import Path

from prnet.app.service import DEFAULT_APP_OUTPUTS, AppError, banner
from prnet.outputs.faces import OUTPUT_KINDS

#: Detector choices of the page ("default": the one prnet-app was started with).
DETECTORS = ("default", "blazeface", "opencv", "dlib")
#: Side of the 3D view, pixels.
VIEW_PX = 420


def safe_name(filename: str, fallback: str) -> str:
    """A file-name stem for an upload: its stem with characters other than letters, digits, ``-`` and
    ``_`` replaced by ``_``, at most 40 characters (``fallback`` when nothing is left)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(filename or "").stem).strip("_")[:40]
    return stem or fallback


def build(service, *, title: str = "PRNet: 3D face reconstruction") -> None:
    """Register the page ``/`` and the ``/results`` files for ``service`` (a :class:`prnet.app.service.AppService`)."""
    from nicegui import app, run, ui

    app.add_media_files("/results", service.work_dir)

    @app.get("/download/{run_id}")
    async def download(run_id: str):
        from fastapi.responses import FileResponse, PlainTextResponse

        try:
            path = await run.io_bound(service.zip, run_id)
        except AppError as e:
            return PlainTextResponse(str(e), status_code=404)
        return FileResponse(path, filename=path.name, media_type="application/zip")
    uploads = Path(tempfile.mkdtemp(prefix="uploads-", dir=service.work_dir))

    def url(path: Path) -> str:
        return "/results/" + path.relative_to(service.work_dir).as_posix()

    async def save_upload(e, fallback: str) -> tuple:
        name = safe_name(e.file.name, fallback)
        path = uploads / f"{len(list(uploads.iterdir()))}_{name}{Path(e.file.name or '').suffix[:10]}"
        await e.file.save(path)
        return path, name

    @ui.page("/")
    def index():
        ui.page_title(title)
        ui.label(title).classes("text-h5")
        if service.random_weights:
            ui.label(banner(True)).classes("prnet-banner text-white bg-red-7 q-pa-sm text-bold")
        ui.label(f"weights: {service.predictor.source}").classes("text-caption text-grey-8")
        with ui.tabs() as tabs:
            photo_tab = ui.tab("Photo")
            video_tab = ui.tab("Video")
            swap_tab = ui.tab("Swap")
        with ui.tab_panels(tabs, value=photo_tab).classes("w-full"):
            with ui.tab_panel(photo_tab):
                photo_panel()
            with ui.tab_panel(video_tab):
                video_panel()
            with ui.tab_panel(swap_tab):
                swap_panel()

    def error(box, message: str) -> None:
        box.clear()
        with box:
            ui.label(message).classes("prnet-error text-negative text-bold")

    def photo_panel():
        state = {"path": None, "name": None}
        with ui.row().classes("items-end"):
            detector = ui.select(list(DETECTORS), value="default", label="detector").classes("w-32")
            refine = ui.checkbox("refine (re-crop from landmarks)", value=True)
            texture = ui.checkbox("UV texture in .obj / .glb", value=False)
            outputs = ui.select(list(OUTPUT_KINDS), value=list(DEFAULT_APP_OUTPUTS), multiple=True,
                                label="files in the zip").classes("w-96").props("use-chips")

        async def uploaded(e):
            state["path"], state["name"] = await save_upload(e, "photo")
            status.text = f"{state['name']}: ready; press Reconstruct"

        ui.upload(label="Photo (JPEG, PNG, ...)", auto_upload=True, on_upload=uploaded,
                  max_file_size=64 * 2 ** 20).props("accept=image/*").classes("prnet-photo-upload")

        async def reconstruct():
            if state["path"] is None:
                fail("upload a photo first")
                return
            status.text = "reconstructing..."
            button.disable()
            try:
                result = await run.io_bound(service.photo, state["path"], state["name"], outputs=outputs.value,
                                            detector=detector.value, refine=refine.value, texture=texture.value)
            except AppError as e:
                status.text = ""
                fail(str(e))
                return
            finally:
                button.enable()
            if result is None:  # the server is shutting down
                return
            status.text = f"{len(result.faces)} face(s) in {result.seconds:.1f} s"
            show_photo(result)

        def fail(message):
            view.classes(add="invisible")
            error(messages, message)

        button = ui.button("Reconstruct", on_click=reconstruct).classes("prnet-run")
        status = ui.label("").classes("prnet-status")
        messages = ui.column().classes("w-full prnet-photo-results")
        # one view for every result (one WebGL context for the page's life): its parts are updated in place
        with ui.row().classes("w-full") as view:
            with ui.column():
                ui.label("overlay").classes("text-subtitle2")
                overlay = ui.image("").classes("prnet-overlay").style(f"width: {VIEW_PX}px")
            with ui.column():
                ui.label("3D mesh (drag to rotate, wheel to zoom)").classes("text-subtitle2")
                scene = ui.scene(width=VIEW_PX, height=VIEW_PX, grid=False, background_color="#f4f4f4") \
                    .classes("prnet-scene")
            with ui.column():
                pose = ui.label("").classes("prnet-pose")
                ui.label("depth").classes("text-subtitle2")
                depth = ui.image("").classes("prnet-depth").style("width: 240px")
                with ui.expansion("68 landmarks (x, y, z image px)").classes("prnet-landmarks"):
                    landmarks = ui.code("", language="text")
        view.classes(add="invisible")  # hidden, but laid out: the 3D view's canvas keeps its size

        def show_photo(result) -> None:
            messages.clear()
            with messages:
                if result.random_weights:
                    ui.label(banner(True)).classes("prnet-banner text-white bg-red-7 q-pa-sm text-bold")
                ui.link(f"Download all files ({result.zip_name})", f"/download/{result.run_id}") \
                    .props(f"download={result.zip_name}").classes("prnet-download")
                if len(result.faces) > 1:
                    ui.select({f.index: f"face {f.index}" for f in result.faces}, value=0, label="face",
                              on_change=lambda e: show_face(result.faces[e.value])).classes("prnet-face-select")
            show_face(result.faces[0])
            view.classes(remove="invisible")

        def show_face(face) -> None:
            overlay.set_source(url(face.overlay))
            depth.set_source(url(face.depth))
            yaw, pitch, roll = face.pose
            pose.text = f"pose: yaw {yaw:.1f}°, pitch {pitch:.1f}°, roll {roll:.1f}°"
            landmarks.content = "\n".join(f"{i:2d}: {x:8.2f} {y:8.2f} {z:8.2f}"
                                          for i, (x, y, z) in enumerate(face.landmarks))
            scene.delete_objects()
            k = 2.0 / max(face.extent, 1e-6)
            cx, cy, cz = face.centre
            with scene:  # glTF is y up, the scene z up: turn +90 deg about x, then centre and scale to ~2
                scene.gltf(url(face.glb)).scale(k).rotate(math.pi / 2, 0, 0).move(-k * cx, k * cz, -k * cy)
            scene.move_camera(x=0, y=-2.6, z=0, look_at_x=0, look_at_y=0, look_at_z=0, up_x=0, up_y=0, up_z=1,
                              duration=0)

    def swap_panel():
        state = {}
        ui.label("Paint the reference photo's face onto the target photo's face (the largest face of each).") \
            .classes("text-caption")
        with ui.row().classes("items-end"):
            region = ui.select(["face", "eyes"], value="face", label="mode").classes("w-32")
            blend = ui.select(["poisson", "alpha", "none"], value="poisson", label="blend").classes("w-32")

        def uploader(key, label, css):
            async def uploaded(e):
                state[key] = await save_upload(e, key)
                status.text = ", ".join(f"{k}: {v[1]}" for k, v in sorted(state.items()))

            ui.upload(label=label, auto_upload=True, on_upload=uploaded, max_file_size=64 * 2 ** 20) \
                .props("accept=image/*").classes(css)

        with ui.row():
            uploader("target", "Target photo (the face to edit)", "prnet-swap-target")
            uploader("reference", "Reference photo (the face to paint)", "prnet-swap-reference")

        async def do_swap():
            if set(state) != {"target", "reference"}:
                error(results, "upload a target and a reference photo first")
                return
            (tpath, tname), (rpath, rname) = state["target"], state["reference"]
            button.disable()
            try:
                result = await run.io_bound(service.swap, tpath, rpath, target_name=tname, reference_name=rname,
                                            region=region.value, blend=blend.value)
            except AppError as e:
                error(results, str(e))
                return
            finally:
                button.enable()
            if result is None:
                return
            results.clear()
            with results:
                if result.random_weights:
                    ui.label(banner(True)).classes("prnet-banner text-white bg-red-7 q-pa-sm text-bold")
                ui.label(f"{result.painted} pixels painted in {result.seconds:.1f} s")
                ui.image(url(result.image)).classes("prnet-swap-result").style("max-width: 640px")
                ui.link(f"Download {result.image.name}", url(result.image)).props(f"download={result.image.name}") \
                    .classes("prnet-download")

        button = ui.button("Swap", on_click=do_swap).classes("prnet-swap-run")
        status = ui.label("").classes("prnet-status")
        results = ui.column().classes("w-full prnet-swap-results")

    def video_panel():
        results = ui.column().classes("w-full prnet-video-results")
        ui.label(f"A short clip (at most {service.max_frames} frames).").classes("text-caption")

        async def uploaded(e):
            path, name = await save_upload(e, "clip")
            results.clear()
            with results:
                ui.label(f"{name}: tracking...").classes("prnet-status")
            try:
                result = await run.io_bound(service.video, path, name)
            except AppError as err:
                error(results, str(err))
                return
            if result is None:
                return
            results.clear()
            with results:
                if result.random_weights:
                    ui.label(banner(True)).classes("prnet-banner text-white bg-red-7 q-pa-sm text-bold")
                ui.label(f"{result.frames} frames, {result.faces} face rows in {result.seconds:.1f} s")
                ui.video(url(result.video), autoplay=True, muted=True, loop=True).classes("prnet-video") \
                    .style("max-width: 640px")
                for path in (result.csv, result.npz, result.video):
                    ui.link(f"Download {path.name}", url(path)).props(f"download={path.name}") \
                        .classes("prnet-download")

        ui.upload(label="Video clip (.mp4, .mov, .avi, .webm, ...)", auto_upload=True, on_upload=uploaded,
                  max_file_size=256 * 2 ** 20).props("accept=video/*").classes("prnet-video-upload")


def serve(service, *, host: str = "127.0.0.1", port: int = 7860, title: str = "PRNet: 3D face reconstruction") -> None:
    """Build the page and serve it until Ctrl-C (no browser opened, nothing sent elsewhere)."""
    import logging

    from nicegui import ui

    class _NoCtrlCTraceback(logging.Filter):
        """uvicorn logs Ctrl-C's KeyboardInterrupt / CancelledError as a traceback; the tool says it in one line."""

        def filter(self, record):
            text = record.getMessage() + (str(record.exc_info[0]) if record.exc_info else "")
            return not ("KeyboardInterrupt" in text or "CancelledError" in text)

    logging.getLogger("uvicorn.error").addFilter(_NoCtrlCTraceback())
    build(service, title=title)
    ui.run(host=host, port=port, title=title, reload=False, show=False, show_welcome_message=True,
           uvicorn_logging_level="warning", reconnect_timeout=30)
