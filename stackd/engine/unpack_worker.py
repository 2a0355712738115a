"""The unpack worker process: open the blob, chroot into the layer dir, apply, verify, report.

Run as `python -m stackd.engine.unpack_worker REQUEST_JSON`; prints one JSON line. It imports
only the standard library (and zstandard for zstd blobs), all before chroot.
"""

from __future__ import annotations

import json
import os
import sys


def _worker(req: dict[str, object]) -> dict[str, object]:
    import tarfile  # noqa: F401  (imported before chroot: nothing can be imported after)

    from stackd.engine.unpack_stream import (
        ForwardReader,
        LayerFormatError,
        LayerStream,
        LimitExceeded,
        ReadAhead,
    )
    from stackd.engine.unpack_tar import Applier

    raw = open(str(req["blob"]), "rb", buffering=0)  # noqa: SIM115
    try:
        stream = LayerStream(raw, str(req["media_type"]), int(req["max_bytes"]))  # type: ignore[call-overload]
        ahead = ReadAhead(stream)
        os.chroot(str(req["dest"]))
        os.chdir("/")
        os.umask(0o022)
        applier = Applier(ForwardReader(ahead), max_entries=int(req["max_entries"]),  # type: ignore[call-overload]
                          writers=int(req["writers"]))  # type: ignore[call-overload]
        try:
            counts = applier.run()
            ahead.finish()
        except BaseException:
            ahead.abort()
            raise
    except LimitExceeded as e:
        return {"error": "limit", "message": str(e)}
    except LayerFormatError as e:
        return {"error": "format", "message": str(e)}
    except OSError as e:
        name = os.fsdecode(e.filename) if e.filename is not None else ""
        return {"error": "os", "message": f"{name}: {e.strerror or e}"}
    finally:
        raw.close()
    digest = stream.digest()
    want = req["diff_id"]
    if want and digest != want:
        return {"error": "digest",
                "message": f"uncompressed digest {digest} does not match diff_id {want}"}
    return {"diff_id": digest, "compression": stream.kind, "tar_bytes": stream.total,
            "warnings": counts.warnings, **counts.c}


def _worker_main() -> int:
    req = json.loads(sys.argv[1])
    try:
        res = _worker(req)
    except Exception as e:  # a bug or an unexpected tar: report, never a silent half-layer
        res = {"error": "internal", "message": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(res) + "\n")
    sys.stdout.flush()
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(_worker_main())
