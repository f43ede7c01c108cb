"""The model server answers as batch inference does, refuses bad input clearly, and follows the champion."""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests

from pipeline.inputs.store import read_payload, store_root
from pipeline.inputs.wit import hash_path
from tests.serving.bad_inputs import b64, cases, jpeg
from tests.serving.conftest import MODEL, MODES

pytestmark = pytest.mark.serve
# The image tower rounds its features to float16 (what embed stores), so a feature that lands on a rounding
# boundary in one batch and not in another moves a probability by about 1e-6: 1e-5, as issue 43 sets.
TOL = 1e-5


def _test_rows(settings, predictions, n: int):
    """The first ``n`` test images of the index, with their stored bytes and texts."""
    import pyarrow.parquet as pq

    from pipeline.lake.layout import Layout

    index = pq.read_table(Layout.from_settings(settings).image_index).to_pandas()
    index = index[(index["split"] == "test") & (index["status"] == "ok")].head(n)
    store = store_root(settings)
    rows = []
    for r in index.itertuples(index=False):
        texts = {"file_title": r.file_title, **{c: [str(v) for v in getattr(r, c)] for c in
                 ("page_titles", "section_titles", "reference_captions", "attribution_captions", "alt_captions")
                 if getattr(r, c, None) is not None}}
        title = r.file_title[5:] if r.file_title.startswith("File:") else r.file_title
        rows.append((r.image_key, read_payload(f"{store}/{r.shard}", r.offset, r.size), texts, title))
    return rows


def _matrix(server, predictions_json) -> np.ndarray:
    labels = [label["name"] for label in server.info()["labels"]]
    return np.array([[p["probabilities"][n] for n in labels] for p in predictions_json])


def _batch(server, predictions, keys) -> np.ndarray:
    slugs = [label["slug"] for label in server.info()["labels"]]
    return predictions.loc[keys, [f"p_{s}" for s in slugs]].to_numpy()


@pytest.mark.parametrize("mode", MODES)
def test_served_scores_equal_the_infer_parquet(trained, model_server, mode):
    """Base64 bytes and texts in, the `infer` stage's probabilities out, to 1e-6; the topics are those at
    or above the model's thresholds; the answer names the model, its version and taxonomy."""
    settings, summary, predictions = trained[mode]
    server = model_server(settings, {"serve.model_uri": f"models:/{MODEL}/{summary['model_version']}"})
    rows = _test_rows(settings, predictions, 24)
    instances = [{**({"image": b64(data)} if mode != "text" else {}), **texts} for _, data, texts, _ in rows]
    r = server.predict(instances)
    assert r.status_code == 200, r.text
    answers = r.json()["predictions"]
    served = _matrix(server, answers)
    np.testing.assert_allclose(served, _batch(server, predictions, [k for k, *_ in rows]), atol=TOL, rtol=0)
    info = server.info()
    thresholds = {label["name"]: label["threshold"] for label in info["labels"]}
    for answer in answers:
        assert answer["topics"] == [n for n, p in answer["probabilities"].items() if p >= thresholds[n]]
        assert answer["model"] == {"name": MODEL, "version": str(summary["model_version"]), "alias": None,
                                   "taxonomy": "v1.3", "inputs": mode}
    # one instance per request, many requests at once: micro-batched, and the same figures
    before = server.info()["server"]
    with ThreadPoolExecutor(8) as pool:
        singles = list(pool.map(lambda inst: server.predict([inst]).json()["predictions"][0], instances))
    np.testing.assert_allclose(_matrix(server, singles), served, atol=TOL, rtol=0)
    after = server.info()["server"]
    assert after["rows"] - before["rows"] == len(instances)
    assert after["batches"] - before["batches"] < len(instances), (before, after)  # some requests shared a batch


def test_an_image_and_text_model_answers_from_words_alone(trained, model_server):
    """An instance without image (as a failed download in batch inference) is predicted from its words."""
    settings, summary, predictions = trained["image+text"]
    server = model_server(settings, {"serve.model_uri": f"models:/{MODEL}/{summary['model_version']}"})
    rows = _test_rows(settings, predictions, 6)
    words = server.predict([texts for _, _, texts, _ in rows]).json()["predictions"]
    both = server.predict([{"image": b64(d), **t} for _, d, t, _ in rows]).json()["predictions"]
    assert not np.allclose(_matrix(server, words), _matrix(server, both), atol=1e-4)

    from pipeline.orchestration import tracking
    from training.pyfunc import load_predictor

    tracking.configure(settings)
    model = load_predictor(f"models:/{MODEL}/{summary['model_version']}")
    direct = model.predict_inputs(None, model.encode_texts([t for _, _, t, _ in rows]))
    np.testing.assert_allclose(_matrix(server, words), direct, atol=TOL, rtol=0)


class _Mirror:
    """A local upload.wikimedia.org (``devtools.sample.server``) holding the store's images as Commons
    originals, plus a file that never answers in time (``Slow ...``)."""

    def __init__(self, root: Path, rows):
        from devtools.sample.server import RequestCount, ThumbCache, _handler

        for _, data, _, title in rows:
            folder = root / "wikipedia" / "commons" / hash_path(title).strip("/")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / title.replace(" ", "_")).write_bytes(data)
        self.count = RequestCount()
        base = _handler(str(root), ThumbCache(), self.count)

        class Handler(base):
            def do_GET(self):
                if "Slow" in self.path:
                    time.sleep(4)
                return super().do_GET()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_commons_title_is_fetched_politely_cached_and_scored_as_batch(trained, model_server, tmp_path):
    """A title goes through the shard stage's URL, downloader and store check: the same bytes, so the
    Parquet's figures; once fetched it is cached; a missing file is a 404 and a slow host a 424."""
    settings, summary, predictions = trained["image"]
    rows = _test_rows(settings, predictions, 8)
    mirror = _Mirror(tmp_path / "mirror", rows)
    try:
        server = model_server(settings, {"serve.model_uri": f"models:/{MODEL}/{summary['model_version']}",
                                         "shard.mirror_url": mirror.url, "serve.upstream_timeout_s": 1})
        r = server.predict([{"title": f"File:{title}"} for *_, title in rows])
        assert r.status_code == 200, r.text
        answers = r.json()["predictions"]
        np.testing.assert_allclose(_matrix(server, answers), _batch(server, predictions, [k for k, *_ in rows]),
                                   atol=TOL, rtol=0)
        assert all(a["source"].startswith(mirror.url + "/wikipedia/commons/") for a in answers)
        fetched = mirror.count.value
        again = server.predict([{"title": title.replace(" ", "_")} for *_, title in rows])  # no prefix, underscores
        assert again.status_code == 200 and mirror.count.value == fetched, "a cached title was fetched again"
        assert server.info()["server"]["thumbnail_cache_hits"] >= len(rows)

        missing = server.predict([{"title": f"File:{rows[0][3]}"}, {"title": "File:No such file.jpg"}])
        assert missing.status_code == 404 and missing.json()["error"].startswith("instance 1: no Commons file")
        started = time.time()
        slow = server.predict([{"title": "File:Slow upload.jpg"}])
        assert slow.status_code == 424, slow.text
        assert "instance 0: the image host timed out" in slow.json()["error"]
        assert time.time() - started < 8  # one retry of one second each, not the shard stage's minutes
        assert server.predict([{"title": f"File:{rows[1][3]}"}]).status_code == 200  # still up
    finally:
        mirror.close()


def test_bad_input_gets_a_clear_4xx_naming_the_instance_and_the_server_stays_up(trained, model_server):
    settings, summary, _ = trained["image"]
    server = model_server(settings, {"serve.model_uri": f"models:/{MODEL}/{summary['model_version']}",
                                     "serve.max_instances": 8, "serve.max_body_bytes": 2_000_000})
    for what, body, status, phrase in cases(8):
        r = requests.post(f"{server.url}/v1/models/{server.name}:predict", json=body, timeout=30)
        assert r.status_code == status, (what, r.status_code, r.text)
        assert phrase in r.json()["error"], (what, r.json())
    big = requests.post(f"{server.url}/v1/models/{server.name}:predict", data=b"{" + b" " * 2_100_000 + b"}",
                        headers={"Content-Type": "application/json"}, timeout=30)
    assert big.status_code == 413 and "serve.max_body_bytes" in big.json()["error"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(40):
            yield b" " * 100_000

    streamed = requests.post(f"{server.url}/v1/models/{server.name}:predict", data=chunks(), timeout=30)
    assert streamed.status_code == 413, streamed.text
    assert requests.post(f"{server.url}/v1/models/{server.name}:predict", data=b"{nope", timeout=30).status_code == 400
    # as `curl -d` sends it (form content type): JSON is still read, anything else is a 400
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = json.dumps({"instances": [{"image": b64(jpeg())}]})
    assert requests.post(f"{server.url}/v1/models/{server.name}:predict", data=body, headers=form,
                         timeout=30).status_code == 200
    hello = requests.post(f"{server.url}/v1/models/{server.name}:predict", data="hello", headers=form, timeout=30)
    assert hello.status_code == 400 and "not JSON" in hello.json()["error"]
    assert requests.post(f"{server.url}/v1/models/other:predict", json={"instances": []}, timeout=30).status_code == 404
    assert server.predict([{"image": b64(jpeg())}]).status_code == 200


def test_v2_protocol(trained, model_server):
    settings, summary, predictions = trained["image"]
    server = model_server(settings, {"serve.model_uri": f"models:/{MODEL}/{summary['model_version']}"})
    rows = _test_rows(settings, predictions, 3)
    body = {"inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": [b64(d) for _, d, _, _ in rows]}]}
    r = requests.post(f"{server.url}/v2/models/{server.name}/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    probs = np.asarray(out["probabilities"]["data"], dtype="float64").reshape(out["probabilities"]["shape"])
    np.testing.assert_allclose(probs, _batch(server, predictions, [k for k, *_ in rows]), atol=TOL, rtol=0)
    assert out["labels"]["data"] == [label["name"] for label in server.info()["labels"]]
    assert r.json()["model_version"] == str(summary["model_version"])


def test_the_token_is_required_when_configured_and_the_page_is_open(trained, model_server, tmp_path):
    settings, summary, _ = trained["image"]
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    server = model_server(settings, {"serve.model_uri": f"models:/{MODEL}/{summary['model_version']}",
                                     "serve.token_file": str(token_file)}, token="s3cret-token")
    url = f"{server.url}/v1/models/{server.name}:predict"
    body = {"instances": [{"image": b64(jpeg())}]}
    assert requests.post(url, json=body, timeout=30).status_code == 401
    wrong = requests.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(f"{server.url}/info", timeout=10).status_code == 401
    assert requests.get(f"{server.url}/v2/models/{server.name}", timeout=10).status_code == 401
    assert server.predict([{"image": b64(jpeg())}]).status_code == 200
    assert requests.get(server.url + "/", timeout=10).status_code == 200
    # bound to loopback: the port is not open on the machine's other addresses
    import socket

    addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    for address in addresses:
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex((address, server.port)) != 0, f"listening on {address}"


def test_a_promotion_swaps_the_model_under_load_with_no_failed_request(trained, model_server):
    """The server follows @champion: the alias moves, the new version loads beside the old one and takes
    over, and none of the requests sent meanwhile fails."""
    from pipeline.orchestration import tracking

    settings, summary, predictions = trained["image"]
    other = trained["image+text"][1]
    client = tracking.client(settings)
    client.set_registered_model_alias(MODEL, "champion", str(summary["model_version"]))
    server = model_server(settings, {})
    assert server.info()["model"]["version"] == str(summary["model_version"])
    rows = _test_rows(settings, predictions, 8)
    instances = [{"image": b64(d), **t} for _, d, t, _ in rows]
    stop, seen, failures = threading.Event(), [], []

    def client_loop(i):
        while not stop.is_set():
            r = server.predict([instances[i % len(instances)]])
            if r.status_code != 200:
                failures.append((r.status_code, r.text))
            else:
                seen.append((time.time(), r.json()["predictions"][0]["model"]["version"]))

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        moved = time.time()
        client.set_registered_model_alias(MODEL, "champion", str(other["model_version"]))
        deadline = time.time() + 90
        while time.time() < deadline and not any(v == str(other["model_version"]) for _, v in seen[-20:]):
            time.sleep(0.5)
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    versions = [v for _, v in seen]
    assert versions[0] == str(summary["model_version"]) and versions[-1] == str(other["model_version"])
    during = [v for t, v in seen if t > moved]
    assert len(during) > 20, "the load did not go on across the swap"
    info = server.info()
    assert info["server"]["swaps"] == 1
    assert (info["model"]["alias"], info["model"]["version"]) == ("champion", str(other["model_version"]))


def test_not_ready_without_a_champion_then_ready_once_there_is_one(trained, model_server):
    settings, summary, _ = trained["image"]
    server = model_server(settings, {"serve.model_uri": "models:/wiki-image-topics-v1.3@nobody"}, ready=False)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if requests.get(f"{server.url}/livez", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
    assert requests.get(f"{server.url}/v1/models/{server.name}", timeout=5).status_code == 503
    r = server.predict([{"image": b64(jpeg())}])
    assert r.status_code == 503 and "not ready" in r.json()["error"]
    from pipeline.orchestration import tracking

    tracking.client(settings).set_registered_model_alias(MODEL, "nobody", str(summary["model_version"]))
    server.wait_ready(60)
    assert server.predict([{"image": b64(jpeg())}]).status_code == 200


def test_the_page_shows_an_image_with_its_topics_in_a_real_browser(trained, model_server, tmp_path):
    """Headless Chromium: drop an image, see it with a bar per topic and each threshold marked."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`make test-serve` installs it where apt is available)")
    from playwright.sync_api import sync_playwright

    settings, summary, predictions = trained["image"]
    server = model_server(settings, {"serve.model_uri": f"models:/{MODEL}/{summary['model_version']}"})
    key, data, _, _ = _test_rows(settings, predictions, 1)[0]
    image = tmp_path / "upload.png"
    import io

    from PIL import Image

    Image.open(io.BytesIO(data)).convert("RGB").resize((96, 96)).save(image)
    expected = server.predict([{"image": b64(image.read_bytes())}]).json()["predictions"][0]
    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            errors = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/", wait_until="load")
            page.wait_for_selector("#model[data-ready]")
            assert f"{MODEL} v{summary['model_version']}" in page.inner_text("#model")
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#result:not([hidden]) .bar")
            bars = page.eval_on_selector_all(".bar", "els => els.map(e => [e.dataset.topic, "
                                             "Number(e.dataset.probability), e.classList.contains('on')])")
            assert len(bars) == len(expected["probabilities"])
            for topic, p_, on in bars:
                assert abs(p_ - expected["probabilities"][topic]) < 1e-9
                assert on == (topic in expected["topics"])
            assert [b[1] for b in bars] == sorted((b[1] for b in bars), reverse=True)
            marks = page.eval_on_selector_all(".threshold", "els => els.map(e => e.style.left)")
            thresholds = {label["name"]: label["threshold"] for label in server.info()["labels"]}
            assert len(marks) == len(bars)
            for mark, (topic, _, _) in zip(marks, bars):
                assert abs(float(mark.rstrip("%")) - 100 * thresholds[topic]) <= 0.051, (mark, topic)
            assert page.eval_on_selector("#preview", "e => e.complete && e.naturalWidth") == 96
            # a title that does not exist: the error is shown, the page stays usable
            page.fill("#title", "File:../../etc/passwd")
            page.click("button[type=submit]")
            page.wait_for_selector("#error:not(:empty)")
            assert "not a valid Commons file title" in page.inner_text("#error")
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#result:not([hidden]) .bar")
            page.screenshot(path=str(artifacts / "model-server-page.png"), full_page=True)
            assert not [e for e in errors if "400" not in e], errors
        finally:
            browser.close()
    assert (artifacts / "model-server-page.png").stat().st_size > 10_000


def test_the_champion_serves_outside_this_checkout_with_mlflow_models_serve(trained, tmp_path):
    """A fresh venv built from nothing but the champion's own requirements.txt (uv, from the package
    registry), then `mlflow models serve -m models:/<name>@champion` from it in an empty folder with no
    path to this checkout: it loads the model's own code and gives the Parquet's figures."""
    import shutil
    import subprocess

    import mlflow

    from pipeline.orchestration import tracking
    from tests.serving.conftest import ROOT, free_port

    settings, summary, predictions = trained["image"]
    tracking.client(settings).set_registered_model_alias(MODEL, "champion", str(summary["model_version"]))
    tracking.configure(settings)
    requirements = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion/requirements.txt",
                                                            dst_path=str(tmp_path / "req")))
    fresh = tmp_path / "fresh-venv"
    uv = shutil.which("uv", path=str(ROOT / ".venv" / "bin")) or shutil.which("uv")
    base = getattr(sys, "_base_executable", sys.executable)
    if uv:
        subprocess.run([uv, "venv", "-q", "-p", base, str(fresh)], check=True, timeout=120)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(fresh / "bin" / "python"), "-r", str(requirements)],
                       check=True, timeout=900)
    else:
        subprocess.run([base, "-m", "venv", str(fresh)], check=True, timeout=120)
        subprocess.run([str(fresh / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)],
                       check=True, timeout=1800)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env["MLFLOW_TRACKING_URI"] = settings.mlflow_uri
    env["PATH"] = f"{fresh / 'bin'}:{env['PATH']}"  # the fresh venv, activated
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    log = open(tmp_path / "mlflow-serve.log", "wb")
    proc = subprocess.Popen([str(fresh / "bin" / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion",
                             "-p", str(port), "-h", "127.0.0.1", "--env-manager", "local", "-w", "1"],
                            cwd=outside, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "mlflow-serve.log").read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        rows = _test_rows(settings, predictions, 6)
        body = {"dataframe_records": [{"image": base64.b64encode(d).decode()} for _, d, _, _ in rows]}
        r = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert r.status_code == 200, r.text
        out = r.json()["predictions"]
        slugs = [c[2:] for c in predictions.columns if c.startswith("p_")]
        served = np.array([[row[f"p_{s}"] for s in slugs] for row in out])
        batch = predictions.loc[[k for k, *_ in rows], [f"p_{s}" for s in slugs]].to_numpy()
        np.testing.assert_allclose(served, batch, atol=TOL, rtol=0)
    finally:
        proc.terminate()
        proc.wait(30)
    # and that environment, in that folder, cannot import this checkout's code: the model brought its own
    alone = subprocess.run([str(fresh / "bin" / "python"), "-c", "import training.pyfunc"], cwd=outside, env=env,
                           capture_output=True, text=True)
    assert alone.returncode != 0 and "No module named 'training'" in alone.stderr, alone


def test_the_logged_model_carries_its_code_an_input_example_and_its_metrics(trained):
    import mlflow

    from pipeline.orchestration import tracking
    from training.pyfunc import MODEL_CODE

    settings, summary, _ = trained["image"]
    tracking.configure(settings)
    model = mlflow.get_logged_model(summary["logged_model_uri"].removeprefix("models:/"))
    assert {m.key for m in model.metrics} >= {"test_macro_auc_pr", "test_n_images"}
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{summary['model_version']}"))
    shipped = {p.relative_to(local / "code").as_posix() for p in (local / "code").rglob("*.py")}
    wanted = {"/".join([*package.split("."), module]) for package, modules in MODEL_CODE.items() for module in modules}
    # exactly the model's modules, as packages: no tooling, no Spark or Airflow code
    assert {s for s in shipped if not s.endswith("__init__.py")} == wanted, shipped
    assert (local / "serving_input_example.json").is_file()
    requirements = (local / "requirements.txt").read_text().split()
    assert not any(r.startswith(("tensorflow==", "tensorflow-cpu==", "jax", "torch")) for r in requirements), requirements
