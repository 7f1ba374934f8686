"""Checks of the weights on disk (where `nemotron-speech download` puts them) and of the TTS.

Each file is opened and its first bytes read, so a file that exists but cannot be read (wrong
owner after a `sudo` download, a broken mount) fails here and not in the middle of a session.
"""

from __future__ import annotations

import importlib.util
import json
import tarfile
import zipfile
from pathlib import Path

from nemotron_speech import download
from nemotron_speech.doctor.core import Check, Options, fail, ok, skip
from nemotron_speech.tts import KOKORO_VOICE

GB = 1e9


def _unreadable(path: Path) -> str | None:
    """Why `path` is not a readable, non-empty file (None when it is)."""
    if not path.exists():
        return f"missing: {path}"
    if not path.is_file():
        return f"not a file: {path}"
    try:
        with open(path, "rb") as f:
            if not f.read(1):
                return f"empty: {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    return None


def _fetch(what: str, variant: str | None = None) -> str:
    command = f"nemotron-speech download {what}" + (f" --llm-variant {variant}" if variant else "")
    return f"fetch it with `{command}` (--models-dir or NEMOTRON_MODELS_DIR if it lives elsewhere)"


def asr_model_check(options: Options, name: str = "ASR model") -> Check:
    """The `.nemo` the ASR server (or the bot, in-process) loads: a readable tar archive."""
    path = Path(options.asr_model) if options.asr_model else download.asr_path(options.models)
    problem = _unreadable(path)
    if problem:
        return fail(name, problem, _fetch("asr") if not options.asr_model else "check --asr-model")
    if not tarfile.is_tarfile(path):  # a .nemo is a tar of config + weights
        return fail(name, f"{path} is not a .nemo archive (truncated?)", _fetch("asr"))
    return ok(name, f"{path} ({path.stat().st_size / GB:.2f} GB)")


def llm_weights_check(options: Options) -> Check:
    """The Hugging Face folder vLLM serves: config, and every safetensors shard readable."""
    name, variant = "LLM weights", options.variant
    folder = download.llm_path(options.models, variant)
    fix = _fetch("llm", variant)
    if not folder.is_dir():
        return fail(name, f"missing: {folder}", fix)
    if list(folder.glob(".cache/huggingface/download/**/*.incomplete")):
        return fail(name, f"{folder}: an interrupted download left .incomplete files", fix)
    problem = _unreadable(folder / "config.json")
    if problem:
        return fail(name, problem, fix)
    index = folder / "model.safetensors.index.json"
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except FileNotFoundError:
        shards = sorted(p.name for p in folder.glob("*.safetensors"))
    except (OSError, ValueError, KeyError) as exc:
        return fail(name, f"{index} is unreadable: {exc}", fix)
    if not shards:
        return fail(name, f"{folder} has no .safetensors weights", fix)
    for shard in shards:
        problem = _unreadable(folder / shard)
        if problem:
            return fail(name, problem, fix)
    size = sum((folder / s).stat().st_size for s in shards)
    return ok(name, f"{folder} ({len(shards)} safetensors files, {size / GB:.1f} GB)")


def magpie_check(options: Options, name: str = "TTS") -> Check:
    """Magpie: NeMo importable (the `asr` extra) and both checkpoints readable `.nemo` archives.

    Loading them takes NeMo's import and the model's restore (~20 s on a CPU): the service does
    that when the pipeline starts, and a voice it does not have is refused per request.
    """
    if importlib.util.find_spec("nemo") is None:
        return fail(name, "Magpie needs NeMo, which is not installed", "install the asr extra")
    default_model, default_codec = download.magpie_paths(options.models)
    paths = (
        (Path(options.magpie_model or default_model), options.magpie_model, "--magpie-model"),
        (Path(options.magpie_codec or default_codec), options.magpie_codec, "--magpie-codec"),
    )
    for path, given, flag in paths:
        problem = _unreadable(path)
        if problem is None and not tarfile.is_tarfile(path):
            problem = f"{path} is not a .nemo archive (truncated?)"
        if problem:
            return fail(name, f"Magpie {problem}", f"check {flag}" if given else _fetch("magpie"))
    return ok(name, f"Magpie, {paths[0][0]} with codec {paths[1][0]}")


def tts_check(options: Options) -> Check:
    """What the bot's TTS needs at start-up: its weights (Kokoro, Magpie), and its package or
    binary where the bot runs. Without pipecat this is not the bot's environment (a Spark host
    whose bot runs in its image): only the weights, which the host provides, are checked."""
    name = "TTS"
    if options.tts == "magpie":
        return magpie_check(options, name)
    in_bot = importlib.util.find_spec("pipecat") is not None
    if options.tts == "espeak":
        if not in_bot:
            return skip(name, "espeak-ng runs where the bot runs (its image); no pipecat here")
        from nemotron_speech.tts.espeak import EspeakNotFoundError, find_espeak

        try:
            return ok(name, f"espeak-ng at {find_espeak()}")
        except EspeakNotFoundError as exc:
            problem, _, fix = str(exc).partition(": ")
            return fail(name, problem, fix)
    problem = _kokoro_weights_problem(options)
    if problem is not None:
        return fail(name, *problem)
    where = f"Kokoro, voice {options.tts_voice or KOKORO_VOICE}, weights in "
    where += str(download.tts_dir(options.models))
    if not in_bot:
        return ok(name, f"{where} (kokoro-onnx is checked where the bot runs; no pipecat here)")
    if importlib.util.find_spec("kokoro_onnx") is None:
        return fail(
            name,
            "Kokoro needs kokoro-onnx, which is not installed",
            "install the project's kokoro extra (pipecat-ai[kokoro]), or use --tts espeak",
        )
    return ok(name, where)


def _kokoro_weights_problem(options: Options) -> tuple[str, str] | None:
    """(problem, fix) when the Kokoro weights or the chosen voice are missing or broken."""
    root = download.tts_dir(options.models)
    for file in (download.KOKORO_MODEL, download.KOKORO_VOICES):
        problem = _unreadable(root / file)
        if problem:
            return f"Kokoro weights {problem}", _fetch("tts")
    voice = options.tts_voice or KOKORO_VOICE
    voices = root / download.KOKORO_VOICES
    if not zipfile.is_zipfile(voices):  # kokoro-onnx np.load()s it: an .npz archive
        return f"{voices} is not a voices archive (truncated?)", _fetch("tts")
    with zipfile.ZipFile(voices) as archive:
        names = sorted(n.removesuffix(".npy") for n in archive.namelist())
    if voice not in names:
        return (
            f"voice {voice!r} is not in {voices}",
            f"pick one of {', '.join(names[:8])}... with --tts-voice",
        )
    return None
