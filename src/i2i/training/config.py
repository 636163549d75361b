"""Training configuration: typed dataclasses, loaded from YAML, overridable with checked keys."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

GAN_MODES = ("lsgan", "vanilla", "wgangp")
CYCLE_LOSSES = ("l1", "l2")
AMP_MODES = ("off", "fp16", "bf16")
LR_POLICIES = ("linear", "step")

# Keys that may differ between a run and its resumption without changing what is computed.
RESUME_MAY_CHANGE = frozenset(
    {
        "max_steps",
        "log_every",
        "sample_every",
        "save_every",
        "keep_last",
        "tensorboard",
        "progress",
        "data.root",
        "data.num_workers",
        # The average of the generators never feeds back into training: it may be turned
        # on, off or retuned when resuming (turned on, it starts from the resumed weights).
        "ema_decay",
        "ema_start",
    }
)


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


@dataclass
class DataConfig:
    """Where the images are and how they are prepared (the reference's preprocess options)."""

    root: str = ""
    preprocess: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    no_flip: bool = False
    rotate: float = 0.0  # random rotation of up to this many degrees either way (0: off)
    zoom: float = 0.0  # random zoom-in by a factor in [1, 1 + zoom] (0: off)
    serial: bool = False
    num_workers: int = 2
    skip_bad_images: bool = False


@dataclass
class TrainConfig:
    """Everything a training run needs; stored whole in every checkpoint.

    The top-level loss keys (``lambda_a``, ``lambda_b``, ``lambda_identity``, ``cycle_loss``,
    ``pool_size``) are CycleGAN's. Other families take their loss weights from ``loss``, a
    mapping checked against the family trainer's own options (the reference's names, for
    example ``lambda_l1`` for pix2pix or ``recon_kl_w`` for UNIT).

    ``lr_policy``: ``linear`` keeps ``lr`` for ``n_epochs`` epochs and decays it linearly to
    zero over ``n_epochs_decay`` more (CycleGAN, pix2pix); ``step`` multiplies it by
    ``lr_gamma`` every ``lr_step_size`` steps (UNIT, MUNIT).
    """

    family: str = "cyclegan"
    model: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 1
    n_epochs: int = 100
    n_epochs_decay: int = 100
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 0.0
    lr_policy: str = "linear"
    lr_step_size: int = 100_000
    lr_gamma: float = 0.5
    gan_mode: str = "lsgan"
    lambda_a: float = 10.0
    lambda_b: float = 10.0
    lambda_identity: float = 0.5
    lambda_gp: float = 10.0
    cycle_loss: str = "l1"
    pool_size: int = 50
    seed: int = 0
    max_steps: int = 0
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    log_every: int = 10
    sample_every: int = 200
    save_every: int = 500
    keep_last: int = 3
    tensorboard: bool = True
    progress: bool = True
    ema_decay: float = 0.0  # 0: off; typical 0.999 (0.99 for runs of a few thousand steps)
    ema_start: int = 0

    def validate(self) -> None:
        """Raise ConfigError for values no run can use."""
        _choice("gan_mode", self.gan_mode, GAN_MODES)
        _choice("cycle_loss", self.cycle_loss, CYCLE_LOSSES)
        _choice("amp", self.amp, AMP_MODES)
        _choice("lr_policy", self.lr_policy, LR_POLICIES)
        for name in (
            "batch_size",
            "log_every",
            "sample_every",
            "save_every",
            "keep_last",
            "lr_step_size",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_epochs < 0 or self.n_epochs_decay < 0 or self.n_epochs + self.n_epochs_decay < 1:
            raise ConfigError("n_epochs + n_epochs_decay must be at least 1 (both >= 0)")
        if self.pool_size < 0 or self.max_steps < 0:
            raise ConfigError("pool_size and max_steps must be >= 0")
        if self.weight_decay < 0 or not 0 < self.lr_gamma <= 1:
            raise ConfigError("weight_decay must be >= 0 and lr_gamma in (0, 1]")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(
                f"ema_decay must be in [0, 1) (0: no average; typical 0.999), got {self.ema_decay}"
            )
        if self.ema_start < 0:
            raise ConfigError(f"ema_start must be >= 0, got {self.ema_start}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(valid)}")


# A family's reference recipe for the optimisation keys a config leaves out; TrainConfig's
# own defaults are CycleGAN's. (Presets spell everything out; these cover configs that
# name only a family, and overrides like `--set family=unit` on the defaults.)
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "pix2pix": {"gan_mode": "vanilla", "pool_size": 0},
    "twostep": {"gan_mode": "vanilla", "pool_size": 0, "n_epochs_decay": 0},
    **{
        family: {
            "lr": 1e-4,
            "weight_decay": 1e-4,
            "lr_policy": "step",
            "lr_step_size": 100_000,
            "lr_gamma": 0.5,
            "gan_mode": "lsgan",
            "pool_size": 0,
        }
        for family in ("unit", "munit")
    },
    # StarGAN: a WGAN-GP critic, Adam 1e-4, no image pool (its loss weights are loss.*).
    "stargan": {"gan_mode": "wgangp", "lr": 1e-4, "pool_size": 0},
}


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from plain data, rejecting unknown keys by name.

    Keys left out take the family's reference values (FAMILY_DEFAULTS), then TrainConfig's.
    """
    raw = dict(raw)
    family = raw.get("family", TrainConfig.family)
    for key, value in FAMILY_DEFAULTS.get(family if isinstance(family, str) else "", {}).items():
        raw.setdefault(key, value)
    data_raw = raw.pop("data", {}) or {}
    if not isinstance(data_raw, dict):
        raise ConfigError("data must be a mapping of data.* keys")
    _check_keys(raw, TrainConfig, "")
    _check_keys(data_raw, DataConfig, "data.")
    raw = {k: _typed(TrainConfig, k, v, "") for k, v in raw.items()}
    data_raw = {k: _typed(DataConfig, k, v, "data.") for k, v in data_raw.items()}
    cfg = TrainConfig(**raw, data=DataConfig(**data_raw))
    cfg.model = dict(cfg.model or {})
    cfg.loss = dict(cfg.loss or {})
    cfg.validate()
    return cfg


def _typed(cls: type, key: str, value: Any, prefix: str) -> Any:
    """`value` as the type of the field's default; a clear error if it cannot be."""
    default = cls() if cls is DataConfig else TrainConfig()
    expected = type(getattr(default, key))
    ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    if ok:
        return value
    if expected is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML reads 2e-4 (no dot) as a string
        except ValueError:
            pass
    raise ConfigError(f"{prefix}{key} must be {expected.__name__}, got {value!r}")


def _check_keys(raw: dict[str, Any], cls: type, prefix: str) -> None:
    valid = {f.name for f in fields(cls)} - ({"data"} if cls is TrainConfig else set())
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid: {', '.join(sorted(prefix + k for k in valid))}"
        )


PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"


def list_presets() -> list[str]:
    """Names of the presets shipped with i2i (usable as `--config NAME`)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_config_path(path: str | Path) -> Path:
    """A YAML file, or the name of a shipped preset (e.g. `cyclegan-tiny`)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    preset = PRESETS_DIR / f"{candidate.name.removesuffix('.yaml')}.yaml"
    if candidate.parent == Path(".") and preset.is_file():
        return preset
    raise ConfigError(
        f"{path}: no such config file or preset (presets: {', '.join(list_presets())})"
    )


def load_config(path: str | Path | None) -> TrainConfig:
    """Read a YAML file or preset; None gives the defaults (the reference CycleGAN recipe)."""
    if path is None:
        return config_from_dict({})
    path = resolve_config_path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    try:
        return config_from_dict(raw)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply `key=value` overrides (dotted keys: `data.crop_size=64`, `model.ngf=32`)."""
    raw = cfg.to_dict()
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        value = yaml.safe_load(text) if text else ""
        parts = key.split(".")
        target = raw
        for part in parts[:-1]:
            if part not in target or not isinstance(target[part], dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a config section")
            target = target[part]
        if (len(parts) == 1 or parts[0] == "data") and parts[-1] not in target:
            raise ConfigError(f"override {key!r}: unknown key")
        if isinstance(target.get(parts[-1]), str) and not isinstance(value, str):
            value = text  # a string key keeps its text: YAML would read amp=off as False
        target[parts[-1]] = value
    if raw["family"] != cfg.family:
        # A new family: keys still at TrainConfig's (CycleGAN's) defaults, and not set by an
        # override, take the new family's reference values.
        given = {item.partition("=")[0] for item in overrides}
        defaults = TrainConfig()
        for key, value in FAMILY_DEFAULTS.get(raw["family"], {}).items():
            if key not in given and raw[key] == getattr(defaults, key):
                raw[key] = value
    return config_from_dict(raw)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_differences(
    saved: dict[str, Any], requested: dict[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """{key: (saved, requested)} for values that would change what the resumed run computes."""
    a, b = flatten(saved), flatten(requested)
    keys = sorted(set(a) | set(b))
    return {
        k: (a.get(k), b.get(k)) for k in keys if k not in RESUME_MAY_CHANGE and a.get(k) != b.get(k)
    }


def loss_options(cfg: TrainConfig, options_type: type[T]) -> T:
    """``cfg.loss`` as a family trainer's loss-options dataclass (defaults for keys left out).

    Unknown keys and values of the wrong type are a ConfigError naming the valid keys.
    """
    valid = {f.name: f for f in fields(options_type)}  # type: ignore[arg-type]
    unknown = sorted(set(cfg.loss) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown loss key(s) {', '.join('loss.' + k for k in unknown)} for family "
            f"{cfg.family!r}; valid: {', '.join(sorted('loss.' + k for k in valid)) or 'none'}"
        )
    defaults = options_type()
    values: dict[str, Any] = {}
    for key, value in cfg.loss.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            with contextlib.suppress(ValueError):
                value = float(value)
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(f"loss.{key} must be {expected.__name__}, got {value!r}")
        values[key] = value
    try:
        return options_type(**values)
    except ValueError as exc:
        raise ConfigError(f"loss: {exc}") from exc


def replace(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    return dataclasses.replace(cfg, **changes)
