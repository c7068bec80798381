"""Loaded by every Python process of a multi-process test (tests/test_multiproc.py puts this folder on PYTHONPATH).

With LYRICTOOL_WRITE_AUDIT=DIR and a launcher's RANK set, each rank appends to DIR/rank<R>.txt every file it opens
for writing, creates, renames onto or deletes, and every safetensors file it writes (Rust code, no Python open), so
the test can show that no two ranks write the same file.
"""

import os
import sys

_dir, _rank = os.environ.get("LYRICTOOL_WRITE_AUDIT"), os.environ.get("RANK")

if _dir and _rank is not None:
    _log = os.open(os.path.join(_dir, f"rank{_rank}.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _busy = []

    def _record(path) -> None:
        if _busy or not isinstance(path, (str, bytes, os.PathLike)):
            return
        _busy.append(1)
        try:
            os.write(_log, (os.path.abspath(os.fsdecode(path)) + "\n").encode("utf-8", "surrogateescape"))
        finally:
            _busy.pop()

    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int)
                                                                              and flags & _WRITE_FLAGS):
                _record(path)
        elif event in ("os.rename", "os.replace"):
            _record(args[1])
        elif event in ("os.remove", "os.unlink", "os.mkdir"):
            _record(args[0])

    sys.addaudithook(_hook)

    class _PatchSafetensors:
        """Wrap safetensors.torch.save_file as the module is first loaded (before transformers binds it)."""

        def find_spec(self, name, path=None, target=None):
            if name != "safetensors.torch":
                return None
            sys.meta_path.remove(self)
            import importlib.machinery

            spec = importlib.machinery.PathFinder.find_spec(name, path)
            real = spec.loader

            class _Loader:
                def create_module(self, spec):
                    return real.create_module(spec)

                def exec_module(self, module):
                    real.exec_module(module)
                    original = module.save_file

                    def save_file(tensors, filename, *a, **k):
                        _record(filename)
                        return original(tensors, filename, *a, **k)

                    module.save_file = save_file

            spec.loader = _Loader()
            return spec

    sys.meta_path.insert(0, _PatchSafetensors())
