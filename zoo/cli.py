"""The `zoo` command line.

    zoo list [PATTERN]                      registered models
    zoo info NAME                           config, parameters, codebooks, weights entries
    zoo encode IN OUT --model NAME          image/audio file or folder -> tokens (.safetensors)
    zoo decode IN OUT                       tokens file or folder -> PNG / WAV
    zoo reconstruct IN OUT --model NAME     encode + decode, file or folder
    zoo docs [--check]                      regenerate the model table of docs/index.md
    zoo bench NAME                          encode/decode throughput on random input
    zoo train ... / zoo eval ...            training and evaluation (zoo.train.cli / zoo.metrics.cli)

Every subcommand has `--help`. Bad input ends with a one-line `zoo <command>: error: ...` on stderr and a non-zero
exit status (2 for usage errors, 1 otherwise); `--debug` shows the traceback instead.

Folder runs (encode, decode, reconstruct) skip a file that fails (unreadable, wrong format, tokens of another model
...) with a `zoo <command>: skipped FILE: reason` line and go on; the summary counts them and the exit status is 3
when some files were skipped (1 when none succeeded, or when the first 20 all failed: a systemic fault).
`--strict` stops at the first failure instead.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.api import accepts_option
from zoo.docs import format_count, meta_model

_DELEGATED = {
    "train": ("zoo.train.cli", "train a tokenizer from a recipe (zoo train --help)"),
    "eval": ("zoo.metrics.cli", "evaluate a tokenizer: PSNR/SSIM/LPIPS/rFID/pFID, audio metrics (zoo eval --help)"),
    "tokenize": ("zoo.pretokenize", "pre-tokenise a dataset into token shards, resumable (zoo tokenize --help)"),
}
TOKENS_SUFFIX = ".safetensors"
EXIT_SKIPPED = 3  # a folder run finished, but some files were skipped (listed on stderr)
_ABORT_AFTER = 20  # a folder run whose first this-many files all fail stops: the fault is not in the files


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- helpers -------------------------------------------------------------------------------------------------------


def _one_line(err: BaseException) -> str:
    message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _weights_arg(value: str) -> str | None:
    return None if value.lower() in ("none", "random") else value


def _load_model(model: str, weights: str, device: str, precision: str = "fp32"):
    """Load `model` (a registered name or a save_pretrained folder) with a CLI-worded error for missing weights."""
    import zoo
    from zoo.registry import get_spec_for, resolve_ref

    w = _weights_arg(weights)
    kind, ref = resolve_ref(model)
    if kind == "name" and w == "default":
        spec = get_spec_for(str(ref))
        if spec.default_weights is None:
            raise CliError(
                f"{model} has no published weights yet; pass --weights none for a random model or --weights PATH "
                "for your own .safetensors"
            )
    tok = zoo.load(model, weights=w, precision=precision)
    return tok.to(_device(device)).eval()


def _encode_kwargs(tok, args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for flag, key in (("num_tokens", "num_tokens"), ("target_error", "target_error")):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if not accepts_option(tok.encode, key):
            option = "--" + flag.replace("_", "-")
            raise CliError(f"{tok.name or type(tok).__name__} does not take {option} (its encode has no {key})")
        kwargs[key] = value
    return kwargs


def _decode_kwargs(tok, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    kwargs: dict[str, Any] = {}
    for flag, key in (("steps", "steps"), ("guidance", "guidance")):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if not accepts_option(tok.decode, key):
            raise CliError(f"{tok.name or type(tok).__name__} has a deterministic decoder; it takes no --{flag}")
        kwargs[key] = value
    if "generator" in inspect.signature(tok.decode).parameters:
        kwargs["generator"] = torch.Generator(device=tok.device).manual_seed(args.seed)
    return kwargs


def _input_extensions(modality: str) -> tuple[str, ...]:
    from zoo.io import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS

    return AUDIO_EXTENSIONS if modality == "audio" else IMAGE_EXTENSIONS


def _pairs(src: Path, dst: Path, extensions: tuple[str, ...], out_suffix: str | None, what: str):
    """(input, output) paths: one file -> the file OUT; a folder -> the same tree under the folder OUT."""
    from zoo.io import find_files

    if src.is_file():
        if src.suffix.lower() not in extensions:
            raise CliError(f"{src} is not {what} (expected {', '.join(extensions)})")
        if dst.is_dir():
            dst = dst / (src.stem + (out_suffix or src.suffix))
        return [(src, dst)]
    if not src.exists():
        raise CliError(f"no file or folder at {src}")
    files = find_files(src, extensions)
    if not files:
        raise CliError(f"{src} contains no {what} ({', '.join(extensions)})")
    if dst.exists() and not dst.is_dir():
        raise CliError(f"{src} is a folder, so OUT must be a folder too; {dst} is a file")
    return [(f, dst / f.relative_to(src).with_suffix(out_suffix or f.suffix)) for f in files]


def _progress(items: list, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", disable=quiet or len(items) < 2, file=sys.stderr)


class _FolderRun:
    """Run one piece of work per file; in a folder run a failing file is reported and skipped (`--strict`: raised).

    `finish()` prints the summary and returns the exit status (0, or EXIT_SKIPPED when files were skipped).
    """

    def __init__(self, command: str, args: argparse.Namespace, total: int, folder: bool) -> None:
        self.command, self.args, self.total, self.folder = command, args, total, folder
        self.done = 0
        self.skipped: list[tuple[Path, str]] = []

    def run(self, path: Path, work: Callable[[], None]) -> None:
        try:
            work()
        except (CliError, KeyboardInterrupt, MemoryError):
            raise
        except Exception as err:
            if not self.folder or getattr(self.args, "strict", False):
                raise
            reason = f"{type(err).__name__}: {_one_line(err)}"
            self.skipped.append((path, reason))
            from tqdm import tqdm

            tqdm.write(f"zoo {self.command}: skipped {path}: {reason}", file=sys.stderr)
            if not self.done and len(self.skipped) >= min(_ABORT_AFTER, self.total):
                raise CliError(f"the first {len(self.skipped)} files all failed, so the fault is probably not in the "
                               f"files; first: {self.skipped[0][0]}: {self.skipped[0][1]}") from None
            return
        self.done += 1

    def finish(self, verb: str, detail: str) -> int:
        quiet = getattr(self.args, "quiet", False)
        if self.skipped:
            sys.stderr.write(f"zoo {self.command}: {verb} {self.done} of {self.total} file(s){detail}; skipped "
                             f"{len(self.skipped)} (listed above; --strict stops at the first)\n")
            return EXIT_SKIPPED
        if not quiet:
            print(f"{verb} {self.done} file(s){detail}", file=sys.stderr)
        return 0


def _read_input(tok, path: Path, args: argparse.Namespace):
    """File -> (model input tensor on the model device, encode kwargs for the sample rate, source sample rate)."""
    from zoo.io import read_audio, read_image

    if tok.modality == "audio":
        wav, rate = read_audio(path, over_full_scale=getattr(args, "over_full_scale", "error"))
        return wav.to(tok.device), {"sample_rate": rate}, rate
    if hasattr(tok, "read_input"):  # families that find their input in a photo themselves (TEASER: the face crop)
        x, extra = tok.read_input(path)
        return x.to(tok.device), extra, None
    x = read_image(path, size=tok.input_size, mode=args.resize)
    return x.to(tok.device), {}, None


def _write_output(tok, y, path: Path, sample_rate: int | None) -> None:
    from zoo.io import write_audio, write_image

    if tok.modality == "audio":
        write_audio(y[:1], path, sample_rate or tok.sample_rate)
    else:
        write_image(y[:1], path)


def _out_suffix(tok, requested: str | None) -> str:
    if requested:
        return requested if requested.startswith(".") else "." + requested
    return ".wav" if tok.modality == "audio" else ".png"


def _check_output_suffix(tok, path: Path) -> None:
    from zoo.io import AUDIO_WRITE_EXTENSIONS, IMAGE_WRITE_EXTENSIONS

    allowed = AUDIO_WRITE_EXTENSIONS if tok.modality == "audio" else IMAGE_WRITE_EXTENSIONS
    if path.suffix.lower() not in allowed:
        raise CliError(f"{tok.modality} output {path} must end in one of {', '.join(allowed)}")


def _decode_to_signal(tok, tokens, args: argparse.Namespace, sample_rate: int | None, image=None):
    import torch

    kwargs = _decode_kwargs(tok, args)
    if image is not None and accepts_option(tok.decode, "image"):  # decoders that paint into the input photo (TEASER)
        kwargs["image"] = image
    if tok.modality == "audio" and sample_rate and sample_rate != tok.sample_rate:
        kwargs["sample_rate"] = sample_rate
    with torch.inference_mode():
        return tok.decode(tokens.to(tok.device), **kwargs)


# -- subcommands ---------------------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    import zoo
    from zoo.registry import get_spec

    names = zoo.list_models(args.pattern, family=args.family, modality=args.modality, pretrained=args.pretrained)
    if not names:
        if args.pattern == "*" and not (args.family or args.modality or args.pretrained):
            raise CliError("no model is registered (are the family packages importable?)")
        raise CliError(f"no registered model matches {args.pattern!r} and the filters; `zoo list` shows them all")
    rows = []
    for name in names:
        spec = get_spec(name)
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "modality": spec.modality,
                "weights": spec.default_weights or "-",
                "description": spec.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if args.names_only:
        print("\n".join(names))
        return 0
    cols = ("name", "family", "modality", "weights")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols) + "  DESCRIPTION")
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols) + "  " + r["description"])
    return 0


def _folder_info(folder: Path) -> dict[str, Any]:
    """`zoo info` of a model folder written by save_pretrained (architecture on the meta device, no weights read)."""
    import torch

    import zoo

    if not (folder / "config.json").is_file():
        raise CliError(f"{folder} is not a model folder (no config.json; a model folder is written by "
                       "save_pretrained)")
    with torch.device("meta"):
        tok = zoo.load(folder, weights=None)
    weights = folder / "model.safetensors"
    return {
        "name": str(folder), "family": tok.family, "modality": tok.modality,
        "description": f"saved model folder (registry name at save time: {tok.name or 'none'})", "paper": None,
        "config": str(folder / "config.json"), "parameters": tok.num_parameters(),
        "codebooks": [{"name": b.name, "size": b.size, "dim": b.dim} for b in tok.codebooks],
        "kwargs": tok.config,
        "weights": {"folder": {"default": True, "format": "zoo", "source": str(weights), "sha256": None,
                               "license": None, "recipe": None, "docs": None, "notes": None, "metrics": {},
                               "available_offline": weights.is_file()}},
    }


def _spec_info(name: str) -> dict[str, Any]:
    from zoo.registry import get_spec_for, resolve_ref

    kind, ref = resolve_ref(name)
    if kind == "path":
        return _folder_info(Path(ref))
    spec = get_spec_for(str(ref))
    tok = meta_model(spec.name)
    weights = {}
    for tag, entry in spec.weights.items():
        local = [entry.source.cache_path()]
        if entry.source.path:
            local.append(Path(entry.source.path).expanduser())
        available = entry.bundled or any(p is not None and p.exists() for p in local)
        weights[tag] = {
            "default": tag == spec.default_weights,
            "format": entry.format,
            "source": entry.source.describe(),
            "sha256": entry.source.sha256,
            "license": entry.license,
            "recipe": entry.recipe,
            "docs": entry.docs,
            "notes": entry.notes,
            "metrics": entry.metrics,
            "available_offline": bool(available),
        }
    return {
        "name": spec.name,
        "family": spec.family,
        "modality": spec.modality,
        "description": spec.description,
        "paper": spec.paper,
        "config": str(spec.config_path) if spec.config_path else None,
        "parameters": tok.num_parameters(),
        "codebooks": [{"name": b.name, "size": b.size, "dim": b.dim} for b in tok.codebooks],
        "kwargs": spec.kwargs,
        "weights": weights,
    }


def cmd_info(args: argparse.Namespace) -> int:
    info = _spec_info(args.name)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"name:        {info['name']}")
    print(f"family:      {info['family']} ({info['modality']})")
    print(f"description: {info['description']}")
    if info["paper"]:
        print(f"paper:       {info['paper']}")
    if info["config"]:
        print(f"config:      {info['config']}")
    print(f"parameters:  {format_count(info['parameters'])} ({info['parameters']:,})")
    books = ", ".join(f"{b['name']} {b['size']} x {b['dim']}" for b in info["codebooks"])
    print(f"codebooks:   {books}")
    print("kwargs:")
    for key, value in info["kwargs"].items():
        print(f"  {key}: {json.dumps(value)}")
    if not info["weights"]:
        print("weights:     none published yet (use --weights none for a random model)")
        return 0
    print("weights:")
    for tag, w in info["weights"].items():
        flag = " (default)" if w["default"] else ""
        print(f"  {tag}{flag}:")
        for key in ("format", "source", "sha256", "license", "recipe", "docs", "notes"):
            if w[key]:
                print(f"    {key}: {w[key]}")
        print(f"    available offline: {'yes' if w['available_offline'] else 'no'}")
        for metric, value in (w["metrics"] or {}).items():
            print(f"    metric {metric}: {json.dumps(value)}")
    return 0


def _require_input(path: Path) -> Path:
    """Fail on a missing input before spending time on loading a model."""
    if not path.exists():
        raise CliError(f"no file or folder at {path}")
    return path


def cmd_encode(args: argparse.Namespace) -> int:
    src, dst = _require_input(Path(args.input)), Path(args.output)
    tok = _load_model(args.model, args.weights, args.device, args.precision)
    what = "audio" if tok.modality == "audio" else "an image"
    pairs = _pairs(src, dst, _input_extensions(tok.modality), TOKENS_SUFFIX, what)
    if src.is_file() and pairs[0][1].suffix != TOKENS_SUFFIX:
        raise CliError(f"tokens output {pairs[0][1]} must end in {TOKENS_SUFFIX}")
    kwargs = _encode_kwargs(tok, args)
    # record absolute paths for local models/weights so that `zoo decode` works from any folder
    from zoo.registry import resolve_ref

    kind, ref = resolve_ref(args.model)
    model_ref = str(Path(ref).resolve()) if kind == "path" else args.model
    weights_ref = str(Path(args.weights).resolve()) if Path(args.weights).is_file() else args.weights
    import torch

    def encode_one(path: Path, out: Path) -> None:
        x, rate_kw, rate = _read_input(tok, path, args)
        with torch.inference_mode():
            tokens = tok.encode(x, **rate_kw, **kwargs)
        tokens = tokens.to("cpu")
        tokens.meta = {**tokens.meta, "zoo_model": model_ref, "zoo_weights": weights_ref, "zoo_source": path.name}
        if rate is not None:
            tokens.meta["zoo_sample_rate"] = rate
        tokens.save(out)

    run = _FolderRun("encode", args, len(pairs), src.is_dir())
    for path, out in _progress(pairs, "encode", args.quiet):
        run.run(path, lambda: encode_one(path, out))
    return run.finish("encoded", f" with {args.model} -> {dst}")


def _decode_shards(args: argparse.Namespace, src: Path, dst: Path) -> int:
    """`zoo decode DIR OUT --key K`: items of a token-shards folder (`zoo tokenize` output) back to signals."""
    from zoo.data.token_shards import TokenShardsMap, read_manifest

    manifest = read_manifest(src)
    data = TokenShardsMap(src, manifest=manifest)
    model = args.model or manifest["model"]
    weights = args.weights or (manifest["weights"].get("tag") or "default")
    if manifest["weights"].get("sha256") is None and args.weights is None:
        weights = "none"
    tok = _load_model(model, weights, args.device, args.precision)
    suffix = _out_suffix(tok, args.format)
    keys = args.key or [data[i][0] for i in range(len(data))]
    single = len(keys) == 1 and dst.suffix != ""
    pairs = [(key, dst if single else dst / (key + suffix)) for key in keys]
    _check_output_suffix(tok, pairs[0][1])
    rate = args.sample_rate
    run = _FolderRun("decode", args, len(pairs), not single)

    def work(key: str, out: Path) -> None:
        try:
            tokens = data.get(key)
        except KeyError as err:
            raise CliError(err.args[0]) from None
        _write_output(tok, _decode_to_signal(tok, tokens, args, rate), out, rate)

    for key, out in _progress(pairs, "decode", args.quiet):
        run.run(Path(key), lambda: work(key, out))
    return run.finish("decoded", f" of {src} with {model} -> {dst}")


def cmd_decode(args: argparse.Namespace) -> int:
    from zoo.io import find_files
    from zoo.tokens import Tokens

    src, dst = Path(args.input), Path(args.output)
    if src.is_dir() and (src / "manifest.json").is_file():
        return _decode_shards(args, src, dst)
    if args.key:
        raise CliError("--key selects items of a token-shards folder (zoo tokenize output); "
                       f"{src} is not one (no manifest.json)")
    if src.is_file():
        files = [src]
    elif src.is_dir():
        files = find_files(src, (TOKENS_SUFFIX,))
        if not files:
            raise CliError(f"{src} contains no {TOKENS_SUFFIX} tokens files")
    else:
        raise CliError(f"no tokens file or folder at {src}")
    first, first_file, unreadable = None, files[0], []
    for candidate in files if src.is_dir() else files[:1]:  # the first readable file says which model made them
        try:
            first, first_file = Tokens.load(candidate), candidate
            break
        except ValueError as err:
            if args.strict:
                raise
            unreadable.append(candidate)
            if len(unreadable) >= _ABORT_AFTER:
                raise CliError(f"the first {len(unreadable)} tokens files are all unreadable; first: {err}") from None
    if first is None:
        raise CliError(f"no tokens file under {src} can be read")
    recorded = first.meta.get("zoo_model")
    model = args.model or recorded
    if not model:
        raise CliError(f"{first_file} does not say which model made it; pass --model NAME")
    weights = args.weights or first.meta.get("zoo_weights") or "default"
    tok = _load_model(model, weights, args.device, args.precision)
    suffix = _out_suffix(tok, args.format)
    if src.is_file():
        pairs = [(src, dst / (src.stem + suffix) if dst.is_dir() else dst)]
        _check_output_suffix(tok, pairs[0][1])
    else:
        pairs = [(f, dst / f.relative_to(src).with_suffix(suffix)) for f in files]
        _check_output_suffix(tok, pairs[0][1])
    def decode_one(path: Path, out: Path) -> None:
        tokens = first if path == first_file else Tokens.load(path)
        made_by = tokens.meta.get("zoo_model")
        if not args.model and made_by != recorded:
            raise ValueError(f"made by {made_by or 'an unrecorded model'}, not by {recorded} like {first_file.name}; "
                             "decode it on its own, or pass --model to force one model")
        rate = args.sample_rate or tokens.meta.get("zoo_sample_rate")
        y = _decode_to_signal(tok, tokens, args, rate)
        _write_output(tok, y, out, rate)

    run = _FolderRun("decode", args, len(pairs), src.is_dir())
    for path, out in _progress(pairs, "decode", args.quiet):
        run.run(path, lambda: decode_one(path, out))
    return run.finish("decoded", f" with {model} -> {dst}")


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    src, dst = _require_input(Path(args.input)), Path(args.output)
    tok = _load_model(args.model, args.weights, args.device, args.precision)
    what = "audio" if tok.modality == "audio" else "an image"
    suffix = _out_suffix(tok, args.format)
    pairs = _pairs(src, dst, _input_extensions(tok.modality), suffix, what)
    _check_output_suffix(tok, pairs[0][1])
    enc_kwargs = _encode_kwargs(tok, args)

    def reconstruct_one(path: Path, out: Path) -> None:
        x, rate_kw, rate = _read_input(tok, path, args)
        with torch.inference_mode():
            tokens = tok.encode(x, **rate_kw, **enc_kwargs)
        y = _decode_to_signal(tok, tokens, args, args.sample_rate or rate, image=x)
        _write_output(tok, y, out, args.sample_rate or rate)

    run = _FolderRun("reconstruct", args, len(pairs), src.is_dir())
    for path, out in _progress(pairs, "reconstruct", args.quiet):
        run.run(path, lambda: reconstruct_one(path, out))
    return run.finish("reconstructed", f" with {args.model} -> {dst}")


def cmd_docs(args: argparse.Namespace) -> int:
    from zoo.docs import update_docs

    result = update_docs(args.path, check=args.check)
    if result.status == "stale":
        raise CliError(f"{result.path} is stale (the model table differs from the registry); run `zoo docs`")
    messages = {"up to date": "is up to date", "unchanged": "already up to date", "written": None}
    message = messages[result.status]
    print(f"wrote {result.path}" if message is None else f"{result.path} {message}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from zoo.bench import benchmark, format_result

    if args.iters < 1 or args.batch_size < 1 or args.warmup < 0:
        raise CliError("--iters and --batch-size must be >= 1 and --warmup >= 0")
    tok = _load_model(args.name, args.weights, args.device, args.precision)
    if tok.modality == "audio" and int(args.seconds * tok.sample_rate) < 1:
        raise CliError(f"--seconds must give at least one sample at {tok.sample_rate} Hz")
    result = benchmark(
        tok,
        batch_size=args.batch_size,
        iters=args.iters,
        warmup=args.warmup,
        seconds=args.seconds,
        precision=args.precision,
        encode_kwargs=_encode_kwargs(tok, args),
        decode_kwargs=_decode_kwargs(tok, args),
        name=args.name,
    )
    print(json.dumps(result, indent=2) if args.json else format_result(result, tok.modality))
    return 0


def _delegate(command: str, argv: list[str]) -> int:
    import importlib

    module_name, _ = _DELEGATED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            sys.stderr.write(f"zoo {command}: error: this install has no `{command}` command ({module_name} is missing)"
                             "\n")
        else:
            sys.stderr.write(f"zoo {command}: error: {module_name} needs a missing package: {err.name}; install it\n")
        return 1
    entry = getattr(module, "main", None)
    if entry is None:
        sys.stderr.write(f"zoo {command}: error: {module_name} has no main(argv)\n")
        return 1
    try:
        code = entry(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code if isinstance(code, int) else (0 if code is None else 1)


# -- parser --------------------------------------------------------------------------------------------------------


def _add_model_options(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    if model_required:
        p.add_argument("--model", "-m", required=True, help="registered model name (zoo list) or a saved model folder")
    p.add_argument(
        "--weights",
        default="default",
        help="'default' (the variant's default weights), a weights tag (zoo info NAME), a .safetensors path, "
        "or 'none' for random initialisation",
    )
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1 ...")
    _add_precision_option(p)


def _add_precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="fp32 (default, the reference numbers), or bf16 / fp16 (GPU): heavy layers in reduced "
                   "precision, quantisers in fp32; ids can differ from fp32 (docs/performance.md)")


def _add_encode_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-tokens", type=int, help="encode with this many tokens (variable-length tokenizers)")
    p.add_argument("--target-error", type=float, help="adaptive tokenizers: stop at this reconstruction error")
    p.add_argument(
        "--resize",
        choices=("crop", "stretch", "none"),
        default="crop",
        help="images: resize the shorter side and center-crop (crop), resize ignoring aspect (stretch), or require "
        "the exact size (none)",
    )
    p.add_argument(
        "--over-full-scale",
        choices=("error", "normalize", "clip"),
        default="error",
        help="audio: a float file above full scale (peak > 1) is refused (error, default), divided by its peak "
        "(normalize) or clamped (clip)",
    )


def _add_decode_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, help="sampling steps (flow/diffusion decoders)")
    p.add_argument("--guidance", type=float, help="guidance scale (flow/diffusion decoders)")
    p.add_argument("--seed", type=int, default=0, help="seed of stochastic decoders (default 0: reproducible)")
    p.add_argument("--sample-rate", type=int, help="audio: write at this rate (default: the input's rate)")
    p.add_argument("--format", help="output file type for folders, e.g. png, jpg, wav, flac (default png / wav)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zoo", description="Discrete tokenizers for images, audio and faces.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    from zoo import __version__

    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("list", help="list registered models", description="List registered models.")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch wildcard, e.g. 'gigatok-*' (default: all)")
    p.add_argument("--family", help="only this family")
    p.add_argument("--modality", choices=("image", "audio", "face"), help="only this modality")
    p.add_argument("--pretrained", action="store_true", help="only models with published weights")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--names-only", action="store_true", help="one name per line")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show a model's config, size and weights", description="Describe one model.")
    p.add_argument("name", help="registered model name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "encode",
        help="image/audio file or folder -> tokens (a dataset at scale: zoo tokenize)",
        description="Encode an image/audio file (or every one in a folder) into a tokens .safetensors file "
        "(or a folder of them).",
    )
    p.add_argument("input", help="input file or folder (PNG/JPEG/... images, WAV/FLAC/OGG audio at any rate)")
    p.add_argument("output", help="tokens file (.safetensors) for a file input, a folder for a folder input")
    _add_model_options(p)
    _add_encode_options(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    p.add_argument("--strict", action="store_true",
                   help="folders: stop at the first file that fails (default: skip it, report why, exit status 3)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser(
        "decode",
        help="tokens file or folder -> images/audio",
        description="Decode a tokens file written by `zoo encode` (or a folder of them), or items of a token-shards "
        "folder written by `zoo tokenize`, to PNG/WAV.",
    )
    p.add_argument("input", help="tokens .safetensors file or folder, or a token-shards folder (zoo tokenize)")
    p.add_argument("output", help="output file (.png/.wav/...) or folder")
    p.add_argument("--key", action="append", help="token-shards input: the item(s) to decode (default: all)")
    p.add_argument("--model", "-m", help="model name (default: the one recorded by zoo encode)")
    p.add_argument("--weights", default=None, help="weights (default: the ones recorded by zoo encode); see encode")
    p.add_argument("--device", default="auto", help="torch device")
    _add_precision_option(p)
    _add_decode_options(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    p.add_argument("--strict", action="store_true",
                   help="folders: stop at the first file that fails (default: skip it, report why, exit status 3)")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser(
        "reconstruct",
        help="encode + decode files or folders",
        description="Encode then decode an image/audio file (or a folder); images are clamped to [0, 1].",
    )
    p.add_argument("input", help="input file or folder")
    p.add_argument("output", help="output file or folder")
    _add_model_options(p)
    _add_encode_options(p)
    _add_decode_options(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    p.add_argument("--strict", action="store_true",
                   help="folders: stop at the first file that fails (default: skip it, report why, exit status 3)")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser(
        "docs",
        help="regenerate the model table of docs/index.md",
        description="Regenerate the model table in docs/index.md from the registry.",
    )
    p.add_argument("--check", action="store_true", help="exit 1 if the table is stale instead of writing")
    p.add_argument("--path", help="page to update (default: docs/index.md of this checkout)")
    p.set_defaults(func=cmd_docs)

    p = sub.add_parser(
        "bench",
        help="encode/decode throughput on random input",
        description="Time encode and decode on random input of the model's size.",
    )
    p.add_argument("name", help="registered model name or saved model folder")
    p.add_argument("--weights", default="none", help="weights (default none: speed does not depend on them)")
    p.add_argument("--device", default="auto", help="torch device")
    p.add_argument("--batch-size", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--iters", type=int, default=3, help="timed iterations (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up iterations (default 1)")
    p.add_argument("--seconds", type=float, default=1.0, help="audio: clip length in seconds (default 1)")
    _add_precision_option(p)
    p.add_argument("--num-tokens", type=int, help="encode with this many tokens (variable-length tokenizers)")
    p.add_argument("--target-error", type=float, help="adaptive tokenizers: target reconstruction error")
    p.add_argument("--steps", type=int, help="decoder sampling steps")
    p.add_argument("--guidance", type=float, help="decoder guidance scale")
    p.add_argument("--seed", type=int, default=0, help="seed of stochastic decoders")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_bench)

    for command, (_, text) in _DELEGATED.items():
        sub.add_parser(command, help=text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `zoo` command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        return _delegate(argv[0], argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write(f"zoo {args.command}: interrupted\n")
        return 130
    except Exception as err:  # every failure ends in one line; --debug shows the traceback
        if args.debug or os.environ.get("ZOO_DEBUG"):
            raise
        known = (CliError, ValueError, TypeError, KeyError, FileNotFoundError, NotImplementedError, OSError)
        prefix = "" if isinstance(err, known) else f"{type(err).__name__}: "
        hint = "" if isinstance(err, known) else " (rerun with --debug for the traceback)"
        sys.stderr.write(f"zoo {args.command}: error: {prefix}{_one_line(err)}{hint}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
