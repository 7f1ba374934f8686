"""`nemotron-speech download`: fetch the real model weights into `models/` and check them.

Layout (what the Docker compose file and every service expect; override with --models-dir or
NEMOTRON_MODELS_DIR):

    models/asr/nemotron-speech-streaming-en-0.6b.nemo
    models/llm/NVIDIA-Nemotron-3-Nano-30B-A3B-{BF16,FP8,NVFP4}/   (Hugging Face folder)
    models/tts/kokoro-v1.0.onnx, models/tts/voices-v1.0.bin
    models/tts/magpie/magpie_tts_multilingual_357m.nemo                (`download magpie`)
    models/tts/nanocodec/nemo-nano-codec-22khz-1.89kbps-21.5fps.nemo   (its audio codec)

Hugging Face downloads resume after interruption and show progress bars (huggingface_hub does
both); afterwards every file is compared with the size the Hub reports, and with --sha256 also
with the LFS SHA-256. What was verified is recorded in the folder (`.nemotron-download.json`:
commit, sizes, hashes), so a later run whose files still match that record needs no network at all
(a Spark set up once can run offline); delete the record to ask the Hub for a newer commit.
huggingface_hub is an optional extra (the `download` extra) and is imported only when this
command runs. Services that need weights call `require_weights`, so a missing file always names
the command that fetches it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ASR_REPO = "nvidia/nemotron-speech-streaming-en-0.6b"
ASR_FILE = "nemotron-speech-streaming-en-0.6b.nemo"
LLM_REPOS = {
    "bf16": "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16",
    "fp8": "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-FP8",
    "nvfp4": "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-NVFP4",
}
# Kokoro-82M ONNX files at the URLs pipecat's KokoroTTSService downloads from itself
# (pipecat.services.kokoro.tts); fetching them here lets the bot start offline in a container.
KOKORO_MODEL = "kokoro-v1.0.onnx"
KOKORO_VOICES = "voices-v1.0.bin"
KOKORO_RELEASE = "https://github.com/thewh1teagle/kokoro-onnx/releases/download/model-files-v1.0"
TTS_URLS = {name: f"{KOKORO_RELEASE}/{name}" for name in (KOKORO_MODEL, KOKORO_VOICES)}
# Magpie TTS and the audio codec its checkpoint names; file names follow NeMo's from_pretrained
# rule (<repo name>.nemo)
MAGPIE_REPO = "nvidia/magpie_tts_multilingual_357m"
MAGPIE_FILE = "magpie_tts_multilingual_357m.nemo"
CODEC_REPO = "nvidia/nemo-nano-codec-22khz-1.89kbps-21.5fps"
CODEC_FILE = "nemo-nano-codec-22khz-1.89kbps-21.5fps.nemo"
WHAT = ("asr", "llm", "tts", "magpie", "all")
RECORD = ".nemotron-download.json"  # what was verified, per folder: repo, commit, files


def models_dir(path: str | os.PathLike | None = None) -> Path:
    """The models folder: explicit path, else $NEMOTRON_MODELS_DIR, else ./models."""
    return Path(path or os.environ.get("NEMOTRON_MODELS_DIR") or "models")


def asr_path(root: Path) -> Path:
    return root / "asr" / ASR_FILE


def llm_path(root: Path, variant: str) -> Path:
    return root / "llm" / LLM_REPOS[variant].split("/")[1]


def tts_dir(root: Path) -> Path:
    return root / "tts"


def magpie_paths(root: Path) -> tuple[Path, Path]:
    """The Magpie checkpoint and its codec checkpoint under the models folder."""
    return tts_dir(root) / "magpie" / MAGPIE_FILE, tts_dir(root) / "nanocodec" / CODEC_FILE


def require_weights(path: str | os.PathLike, what: str, variant: str | None = None) -> Path:
    """Return `path` if it exists, else raise FileNotFoundError naming the download command."""
    path = Path(path)
    if path.exists():
        return path
    command = f"nemotron-speech download {what}"
    if variant:
        command += f" --llm-variant {variant}"
    raise FileNotFoundError(f"{what} weights not found at {path}; fetch them with `{command}`")


@dataclass(frozen=True)
class RemoteFile:
    """What the Hub says a file should be."""

    size: int
    sha256: str | None  # only for LFS files


def resolve(repo_id: str) -> tuple[str, dict[str, RemoteFile]]:
    """The repo's current commit and the sizes (and LFS SHA-256s) of its files at that commit.

    Downloading at the same commit keeps the check meaningful if the repo changes meanwhile.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi()
    commit = api.model_info(repo_id).sha
    tree = api.list_repo_tree(repo_id, recursive=True, revision=commit)
    manifest = {
        f.path: RemoteFile(f.size, f.lfs.sha256 if f.lfs else None)
        for f in tree
        if isinstance(f, RepoFile)
    }
    return commit, manifest


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def verify(local_dir: Path, manifest: dict[str, RemoteFile], *, hashes: bool) -> list[str]:
    """Problems found comparing `local_dir` with `manifest` (empty list = all good)."""
    problems = []
    for name, want in sorted(manifest.items()):
        path = local_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != want.size:
            problems.append(f"{name}: {path.stat().st_size} bytes, expected {want.size}")
        elif hashes and want.sha256 and sha256_of(path) != want.sha256:
            problems.append(f"{name}: sha256 differs from the Hub's")
    return problems


def write_record(local_dir: Path, repo: str, commit: str, manifest: dict[str, RemoteFile]) -> None:
    """Remember what `local_dir` was verified against, for `matches_record`."""
    files = {name: {"size": f.size, "sha256": f.sha256} for name, f in manifest.items()}
    record = {"repo": repo, "commit": commit, "files": files}
    (local_dir / RECORD).write_text(json.dumps(record, indent=1) + "\n")


def matches_record(local_dir: Path, repo: str, *, hashes: bool) -> bool:
    """True (and says so) when `local_dir` holds a verified download of `repo` whose files still
    match the record: then the Hub need not be asked, and no network is needed."""
    try:
        record = json.loads((local_dir / RECORD).read_text())
        manifest = {name: RemoteFile(**f) for name, f in record["files"].items()}
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or not ours
        return False
    if record.get("repo") != repo or verify(local_dir, manifest, hashes=hashes):
        return False
    print(
        f"verified {len(manifest)} file(s) in {local_dir} ({'sha256' if hashes else 'sizes'}) "
        f"against its record of {repo}@{record['commit'][:12]}; Hub not contacted"
    )
    return True


def download_file(repo: str, path: Path, *, hashes: bool) -> Path:
    """One file of a Hub repo into `path`'s folder (verified, and recorded there)."""
    target = path.parent
    if not matches_record(target, repo, hashes=hashes):
        from huggingface_hub import hf_hub_download

        commit, manifest = resolve(repo)
        hf_hub_download(repo, path.name, revision=commit, local_dir=target)
        _check(target, repo, commit, {path.name: manifest[path.name]}, hashes)
    return path


def download_asr(root: Path, *, hashes: bool) -> Path:
    return download_file(ASR_REPO, asr_path(root), hashes=hashes)


def download_magpie(root: Path, *, hashes: bool) -> Path:
    """The Magpie checkpoint and its codec (each in its own folder, each with its record)."""
    model, codec = magpie_paths(root)
    download_file(CODEC_REPO, codec, hashes=hashes)
    return download_file(MAGPIE_REPO, model, hashes=hashes)


def download_llm(root: Path, variant: str, *, hashes: bool) -> Path:
    repo = LLM_REPOS[variant]
    target = llm_path(root, variant)
    if not matches_record(target, repo, hashes=hashes):
        from huggingface_hub import snapshot_download

        commit, manifest = resolve(repo)
        snapshot_download(repo, revision=commit, local_dir=target)
        _check(target, repo, commit, manifest, hashes)
    return target


def fetch_url(url: str, dest: Path) -> None:
    """Download `url` to `dest`, resuming a partial `.part` file with an HTTP Range request."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as r:
        if r.status != 206:  # server ignored the range: start over
            have = 0
        total = have + int(r.headers.get("Content-Length", 0))
        with open(part, "ab" if have else "wb") as f:
            while block := r.read(1 << 20):
                f.write(block)
                have += len(block)
                print(f"\r{dest.name}: {have / 1e6:.1f}/{total / 1e6:.1f} MB", end="", flush=True)
    print()
    if total and have != total:
        raise OSError(f"{dest.name}: got {have} bytes, expected {total}; run the command again")
    part.rename(dest)


def download_tts(root: Path) -> Path:
    target = tts_dir(root)
    target.mkdir(parents=True, exist_ok=True)
    for name, url in TTS_URLS.items():
        if (target / name).exists():
            continue
        try:
            fetch_url(url, target / name)
        except urllib.error.URLError as exc:
            raise DownloadError(
                f"cannot download {url}: {exc.reason}",
                "check the network (or HTTPS_PROXY) and run the command again; it resumes",
            ) from None
    return target


def _check(
    local_dir: Path, repo: str, commit: str, manifest: dict[str, RemoteFile], hashes: bool
) -> None:
    problems = verify(local_dir, manifest, hashes=hashes)
    if problems:
        raise DownloadError(
            f"{local_dir} does not match the Hub:\n  " + "\n  ".join(problems),
            "run the command again to resume or replace the files",
        )
    write_record(local_dir, repo, commit, manifest)
    print(f"verified {len(manifest)} file(s) in {local_dir} ({'sha256' if hashes else 'sizes'})")


class DownloadError(OSError):
    """An expected failure (bad files, an unreachable URL): printed as one line with the fix."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises for network and HTTP failures: the built-in connection errors,
    huggingface_hub's HTTP errors, and the transport errors of whichever HTTP library it uses
    (requests in old releases, httpx or httpx2 in newer ones; httpx's are not OSErrors). Called
    in an `except` clause, when the Hub client has already imported that library."""
    from huggingface_hub.errors import HfHubHTTPError

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, HfHubHTTPError]
    for name, error in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                        ("requests", "RequestException")):  # fmt: skip
        if (module := sys.modules.get(name)) is not None:
            errors.append(getattr(module, error))
    return tuple(errors)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", default="all", choices=WHAT)
    parser.add_argument(
        "--llm-variant",
        choices=sorted(LLM_REPOS),
        default="nvfp4",
        help="LLM checkpoint: nvfp4 for DGX Spark / Blackwell (default), fp8 for "
        "Hopper/Ada, bf16 for full precision (~60 GB)",
    )
    parser.add_argument(
        "--models-dir",
        default=None,
        help="where to put the weights (default $NEMOTRON_MODELS_DIR or ./models)",
    )
    parser.add_argument(
        "--sha256",
        action="store_true",
        help="also hash every LFS file against the Hub (slow for the LLM)",
    )


def run(args: argparse.Namespace) -> int:
    root = models_dir(args.models_dir)
    try:
        import huggingface_hub  # noqa: F401 - fail early with an install hint
    except ImportError:
        print(
            "download needs huggingface_hub: install the `download` extra, e.g. "
            "`pip install -e '.[download]'` in your clone of nemotron-speech",
            file=sys.stderr,
        )
        return 2
    from huggingface_hub.constants import ENDPOINT

    try:
        if args.what in ("asr", "all"):
            print("ASR:", download_asr(root, hashes=args.sha256))
        if args.what in ("llm", "all"):
            print("LLM:", download_llm(root, args.llm_variant, hashes=args.sha256))
        if args.what in ("tts", "all"):
            print("TTS:", download_tts(root))
        if args.what in ("magpie", "all"):
            print("Magpie TTS:", download_magpie(root, hashes=args.sha256))
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except _hub_errors() as exc:
        print(
            f"error: Hugging Face Hub at {ENDPOINT}: {exc}; check the network (or HF_ENDPOINT, "
            "HTTPS_PROXY) and run the command again. Files downloaded and verified once are "
            "reused without network.",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:  # the local side: permissions, disk space
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
