"""Every option of every command is declared once, in its config class, and is settable from the
command line and from the Python API (the walk over the config classes the consolidation asks for)."""

from __future__ import annotations

import inspect
import types
import typing

import annotated_types as at
import pytest
from pydantic_core import PydanticUndefined

from sdguard.cli.build import cli_fields
from sdguard.cli.main import app, main
from sdguard.core.config import RunConfig, argument_name, build, field_meta
from sdguard.core.errors import InputError

# values for fields whose validators accept only some strings
CHOICES = {
    ("DataAuditConfig", "method"): "exact",
    ("DataAuditConfig", "format"): "imagefolder",
    ("WorldConfig", "image_size"): 64,
    ("TrainTinyConfig", "prediction_type"): "epsilon",
    ("EraseConfig", "method"): "uce",
    ("AuditErasureConfig", "attack"): "soft-prompt",
    ("TrainConfig", "batch_size"): 12,  # --grad-accum (2) must divide it
    ("MemorizationConfig", "suite"): "world",  # --dataset is a world's folder
    ("MemorizationConfig", "detector"): ["anisotropy"],
    ("TrainConfig", "grad_sample_mode"): "functorch",  # ghost clipping refuses group units
    ("FederateConfig", "batch_size"): 12,
    ("FederateConfig", "grad_sample_mode"): "functorch",
    ("FederateConfig", "partition"): "keyword:starry",
    ("DesensitizeConfig", "method"): "exact",
    ("DesensitizeConfig", "format"): "imagefolder",
    ("DesensitizeConfig", "dedup"): "cap:3",
    ("DesensitizeConfig", "pii"): ["mask", "EMAIL_ADDRESS=drop"],
    ("DesensitizeConfig", "entities"): ["EMAIL_ADDRESS", "URL"],
    **{(cls, "watermark"): "dwtDct" for cls in ("GenerateConfig", "WatermarkEmbedConfig", "WatermarkDetectConfig",
                                               "AuditWatermarkConfig")},
    **{(cls, "payload"): "0x5eed" for cls in ("GenerateConfig", "WatermarkEmbedConfig", "WatermarkDetectConfig",
                                             "AuditWatermarkConfig")},
    ("AuditWatermarkConfig", "attacks"): ["jpeg:80", "crop:0.9+rotate:2"],
    ("AuditWatermarkConfig", "fprs"): [0.01, 0.0001],
    ("ServeConfig", "watermark"): "dwtDct",
    ("ServeConfig", "payload"): "0x5eed",
    ("ServeConfig", "block"): ["FEET_EXPOSED=0.5", "ANUS_EXPOSED=off"],
    ("ScanConfig", "watermark"): "dwtDct",
    ("ScanConfig", "payload"): "0x5eed",
    ("ScanConfig", "skip"): ["nudity"],
    ("ScanConfig", "watermark_attacks"): ["jpeg:80"],
    ("ScanConfig", "fail_above"): {"replication": 0.05, "mia_auc": 0.6},
    ("GenerationAuditConfig", "cluster_ids"): [3, 7],
    **{(cls, "backend"): "ray" for cls in ("GenerationAuditConfig", "DataAuditConfig", "ScanConfig", "GenerateConfig")},
}

# options that exclude one another: the first pass leaves out every swap's keys; each swap then runs a
# pass that sets its keys in place of the fields they exclude
ALTERNATIVES = {
    "GenerationAuditConfig": [{"cluster_ids": ["prompts"]},  # a cluster's suite, or the user's prompts
                              # Ray workers, or the mitigation (which runs in this process only)
                              {"backend": ["mitigate", "mitigate_from", "mitigate_target", "mitigate_timestep",
                                           "mitigate_iterations", "mitigate_lr"],
                               "ray_address": [], "workers": [], "worker_gpus": []}],
    "DataAuditConfig": [{"backend": [], "ray_address": [], "workers": [], "worker_gpus": []}],
    "GenerateConfig": [{"backend": ["mitigate", "mitigate_from", "mitigate_target", "mitigate_timestep",
                                    "mitigate_iterations", "mitigate_lr"],
                        "ray_address": [], "workers": [], "worker_gpus": []}],
    "ScanConfig": [{"backend": [], "ray_address": [], "workers": [], "worker_gpus": []}],
    "TrainConfig": [{"noise_multiplier": ["target_epsilon"], "group_column": ["groups"]}],
    "FederateConfig": [{"noise_multiplier": ["target_epsilon"], "group_column": ["groups"]},
                       {"update_noise": ["client_epsilon"]},
                       {"secagg": ["client_dp", "client_epsilon"]},  # SecAgg+ runs without client-level DP
                       {"strategy": ["dp", "target_epsilon", "groups", "privacy_unit"]}],  # FedProx without --dp
}

# each command's library function (the Python API twin)
LIBRARY = {
    "generate": "sdguard.models.commands:generate",
    "info": "sdguard.models.commands:info",
    "demo": "sdguard.demo:demo",
    "erase": "sdguard.harden.erasure.commands:erase",
    "audit data": "sdguard.audit.dataset_replication:audit_data",
    "audit generations": "sdguard.audit.generation_replication:audit_generations",
    "audit erasure": "sdguard.audit.erasure:audit_erasure",
    "audit membership": "sdguard.audit.membership:audit_membership",
    "audit memorization": "sdguard.audit.memorization:audit_memorization",
    "data make-world": "sdguard.data.world:make_world",
    "model train-tiny": "sdguard.train:train_tiny",
    "train": "sdguard.train:train",
    "federate simulate": "sdguard.train.federated:simulate",
    "federate run": "sdguard.train.federated.deploy:run_deployed",
    "federate serve": "sdguard.train.federated.deploy:serve",
    "federate client": "sdguard.train.federated.deploy:node",
    "desensitize": "sdguard.harden.desensitize:desensitize",
    "watermark embed": "sdguard.harden.watermark:watermark_embed",
    "watermark detect": "sdguard.harden.watermark:watermark_detect",
    "audit watermark": "sdguard.audit.watermark:audit_watermark",
    "keygen": "sdguard.deploy.commands:keygen",
    "encrypt": "sdguard.deploy.commands:encrypt",
    "decrypt": "sdguard.deploy.commands:decrypt",
    "serve": "sdguard.deploy.commands:serve",
    "log read": "sdguard.deploy.commands:log_read",
    "log rekey": "sdguard.deploy.commands:log_rekey",
    "api-key add": "sdguard.deploy.commands:serve_key_add",
    "scan": "sdguard.audit.scan:scan",
}


def _commands(typer_app, prefix=()):
    for c in typer_app.registered_commands:
        yield " ".join((*prefix, c.name or c.callback.__name__)), c.callback
    for g in typer_app.registered_groups:
        yield from _commands(g.typer_instance, (*prefix, g.name))


COMMANDS = dict(_commands(app))


def _bounds(info):
    lo = hi = None
    lo_open = hi_open = False
    for m in info.metadata:
        if isinstance(m, at.Ge):
            lo = m.ge
        elif isinstance(m, at.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, at.Le):
            hi = m.le
        elif isinstance(m, at.Lt):
            hi, hi_open = m.lt, True
    return lo, lo_open, hi, hi_open


def _inner(annotation):
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)][0]
    return annotation


def _default(info):
    if info.default_factory is not None:
        return info.default_factory()
    return None if info.default is PydanticUndefined else info.default


def _value(cls, name):
    """A valid value of field ``name`` that differs from its default."""
    if (cls.__name__, name) in CHOICES:
        return CHOICES[(cls.__name__, name)]
    info = cls.model_fields[name]
    ann, default = _inner(info.annotation), _default(info)
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return next(v for v in typing.get_args(ann) if v != default)
    if origin in (list, tuple):
        inner = typing.get_args(ann)[0]
        if typing.get_origin(inner) is typing.Literal:  # choices: two that are not the default
            return [v for v in typing.get_args(inner) if v not in (default or ())][:2]
        return [24, 48] if inner is int else ["first value", "second"]
    if origin is dict:
        return {"size": 4}
    if ann is bool:
        return not default
    if ann is str:
        return f"custom-{name}"
    lo, lo_open, hi, hi_open = _bounds(info)
    candidates = ([default + 1, default * 2 + 3] if default is not None else []) + [3, 7, 0.5, 0.25, 2.5, 1]
    if lo is not None:
        candidates += [lo + 1, lo + 0.5]
    for v in candidates:
        v = int(v) if ann is int else float(v)
        if v == default or (ann is int and isinstance(v, float)):
            continue
        if lo is not None and (v < lo or (lo_open and v == lo)):
            continue
        if hi is not None and (v > hi or (hi_open and v == hi)):
            continue
        return v
    raise AssertionError(f"no test value for {cls.__name__}.{name}")


def _argv(cls, values):
    positional, options = [], []
    for name, value in values.items():
        meta = field_meta(cls, name)
        if meta.get("positional"):
            positional += [str(v) for v in value] if isinstance(value, list) else [str(value)]
            continue
        flag = str(meta.get("flag") or f"--{name.replace('_', '-')}").split()[0]
        on, _, off = flag.partition("/")
        off = off or f"--no-{on[2:]}"
        if isinstance(value, bool):
            options.append(on if value else off)
        elif isinstance(value, dict):
            for k, v in value.items():
                options += [on, f"{k}={v}"]
        elif isinstance(value, list):
            for v in value:
                options += [on, str(v)]
        else:
            options += [on, str(value)]
    return positional + options


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_is_settable_from_the_cli_and_the_python_api(command, monkeypatch, capsys):
    fn = COMMANDS[command]
    cls: type[RunConfig] = fn.config
    swaps = ALTERNATIVES.get(cls.__name__, [])
    fields = cli_fields(cls)
    assert fields, f"{command}: its config has no field"
    first = [n for n in fields if not any(n in swap for swap in swaps)]
    _settable(command, fn, cls, first, monkeypatch, capsys)
    for swap in swaps:
        excluded = {f for replaced in swap.values() for f in replaced}
        _settable(command, fn, cls, [n for n in first if n not in excluded] + list(swap), monkeypatch, capsys)


def _settable(command, fn, cls, fields, monkeypatch, capsys):
    values = {n: _value(cls, n) for n in fields}
    extras = {}
    for label, options_cls in fn.extra.items():
        for n in cli_fields(options_cls):
            if n not in cls.model_fields and n not in extras:
                extras[n] = _value(options_cls, n)
    captured = {}
    monkeypatch.setattr(fn, "handler", lambda cfg, extra, cli: captured.update(cfg=cfg, extra=extra))
    argv = [*command.split(), *_argv(cls, values)]
    for label, options_cls in fn.extra.items():
        argv += _argv(options_cls, {n: v for n, v in extras.items() if n in options_cls.model_fields})
    code = main(argv)
    assert code == 0, (argv, capsys.readouterr().err)
    expected = build(cls, (), values)
    # every field reached the config, each with a value other than its default
    assert captured["cfg"].model_dump() == expected.model_dump()
    for n in fields:
        assert getattr(expected, n) != getattr(cls.model_construct(), n, None), (command, n)
    assert captured["extra"] == extras
    # the library twin takes the same config object and the same values by name
    module, _, attr = LIBRARY[command].partition(":")
    library = getattr(__import__(module, fromlist=[attr]), attr)
    kinds = {p.kind for p in inspect.signature(library).parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD in kinds and inspect.Parameter.VAR_POSITIONAL in kinds, command
    with pytest.raises(InputError, match="is not an option"):
        library(**{**values, "no_such_option": 1})


def test_every_command_is_derived_from_a_config():
    assert set(COMMANDS) == set(LIBRARY)
    for command, fn in COMMANDS.items():
        assert issubclass(fn.config, RunConfig), command
        # the CLI's spelling of each field is the one messages use
        for n in cli_fields(fn.config):
            assert argument_name(fn.config, n).lstrip("-"), (command, n)


def test_a_bad_value_names_the_option_as_typed():
    code = main(["generate", "builtin:tiny-random", "a red circle", "--out", "x", "--n", "0"])
    assert code == 2
