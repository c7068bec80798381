"""The model cache, and checkpoints that are not Hugging Face folders: GGUF files converted once into it.

Every model lyrictool builds or converts (the built-in models, a GGUF checkpoint) is written once per machine to
``cache_dir()/<name>`` through a temporary folder renamed into place, under a file lock: concurrent processes
(torchrun ranks, parallel tests) wait for the one that converts and never see half a model.

A GGUF file (llama.cpp's format; what the package registry's Gemma ships) works as ``model.name`` (the ``.gguf``
file, or a folder holding exactly one): transformers reads it (``from_pretrained(..., gguf_file=...)``, needs the
``gguf`` package) and dequantises it to fp32; that model cannot be saved as it is ("quantized with gguf"), so its
weights are copied into a plain model built from the same config and saved as an ordinary folder that every
command, serve and vLLM load without gguf.  The folder's name carries the GGUF's SHA-256, so a changed file is
converted again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from lyrictool.errors import UserError

GGUF_EXTRA = "pip install 'lyrictool[gguf]'"


def cache_dir() -> Path:
    root = os.environ.get("LYRICTOOL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lyrictool"
    )
    return Path(root)


def is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "tokenizer.json").exists()


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """An exclusive lock on ``target``'s parent folder (POSIX ``flock`` on the folder itself, so no lock file is
    left behind; released when the process dies).  Builds in one cache folder take turns."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def build_once(target: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(folder)`` once per machine so that ``target`` becomes a complete model folder, atomically: into a
    temporary folder renamed into place, one process at a time (the others wait and then find it done)."""
    if is_model_folder(target):
        return target
    with _locked(target):
        if is_model_folder(target):  # another process finished while this one waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            write(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would keep other users of a shared cache out
            if target.exists():  # a half-written folder from an older, killed version of this code
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


# --------------------------------------------------------------------------------------------------------------
# GGUF


def gguf_file_of(path: Path) -> Path | None:
    """The GGUF file that ``path`` names: the file itself, or the one ``.gguf`` in a folder without config.json.
    None when ``path`` is no GGUF checkpoint."""
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
        if len(found) > 1:
            raise UserError(f"model.name: {path} holds {len(found)} GGUF files ({', '.join(p.name for p in found)}); "
                            "name the one to load")
        return found[0] if found else None
    return None


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def require_gguf() -> None:
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"model.name: reading a GGUF checkpoint needs the gguf package ({GGUF_EXTRA})")


def gguf_cache_path(gguf_file: Path, digest: str | None = None) -> Path:
    digest = digest or sha256_of(gguf_file)
    return cache_dir() / "gguf" / f"{gguf_file.stem}-{digest[:16]}"


def convert_gguf(gguf_file: Path, out: Path, *, fix: Callable[[object, object], None] | None = None) -> None:
    """Write ``gguf_file`` as a plain Hugging Face folder (fp32 weights, tokenizer) into ``out``.

    ``fix(model, tokenizer)`` may correct what the GGUF does not carry (a chat template, the end-of-turn token)
    before saving.  A tokenizer without a pad token gets its eos as pad, as ``load_tokenizer`` would.
    """
    require_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:  # an architecture transformers cannot read from GGUF, a bad file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"model.name: cannot convert {gguf_file}: {first}") from None
    config = loaded.config
    for key in ("quantization_config", "_name_or_path"):
        if hasattr(config, key):
            delattr(config, key)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise UserError(f"model.name: {gguf_file}: converted weights do not fit the model "
                        f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
    model.generation_config = loaded.generation_config
    del loaded
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if fix is not None:
        fix(model, tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def gguf_model_path(gguf_file: Path) -> Path:
    """The cached Hugging Face folder for a GGUF file (converted on first use)."""
    return build_once(gguf_cache_path(gguf_file), lambda tmp: convert_gguf(gguf_file, tmp))
