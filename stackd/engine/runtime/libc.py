"""The few ctypes names the runtime's kernel calls need, built on `_ctypes` (ctypes' C half).

`import ctypes` costs ~5 ms at start-up (its pure-Python half defines every type, `struct`,
`types`, the endian classes); the runtime needs a dozen names, so they are defined here from
`_ctypes` directly (~1 ms). They behave exactly as ctypes' own (same C types, same `errno`
swapping); on any surprise the real `ctypes` is used instead. Type checkers see `ctypes`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ctypes import (
        CDLL,
        Structure,
        addressof,
        byref,
        c_char,
        c_char_p,
        c_int,
        c_long,
        c_size_t,
        c_uint,
        c_uint32,
        c_uint64,
        c_ulong,
        c_ushort,
        c_void_p,
        create_string_buffer,
        get_errno,
    )
else:
    try:
        from _ctypes import (
            FUNCFLAG_CDECL,
            FUNCFLAG_USE_ERRNO,
            CFuncPtr,
            Structure,
            _SimpleCData,
            addressof,
            byref,
            dlopen,
            get_errno,
        )

        class c_int(_SimpleCData):
            _type_ = "i"

        class c_uint(_SimpleCData):
            _type_ = "I"

        class c_long(_SimpleCData):
            _type_ = "l"

        class c_ulong(_SimpleCData):
            _type_ = "L"

        class c_ushort(_SimpleCData):
            _type_ = "H"

        class c_uint32(_SimpleCData):
            _type_ = "I"

        class c_uint64(_SimpleCData):
            _type_ = "Q"

        class c_char(_SimpleCData):
            _type_ = "c"

        class c_char_p(_SimpleCData):
            _type_ = "z"

        class c_void_p(_SimpleCData):
            _type_ = "P"

        c_size_t = c_ulong

        def create_string_buffer(init: bytes | int, size: int | None = None) -> object:
            if isinstance(init, int):
                return (c_char * init)()
            buf = (c_char * (len(init) if size is None else size))()
            buf.raw = init
            return buf

        class CDLL:
            """A shared library (None: the running program, i.e. libc); functions use errno."""

            def __init__(self, name: str | None, use_errno: bool = False) -> None:
                class _Func(CFuncPtr):
                    _flags_ = FUNCFLAG_CDECL | (FUNCFLAG_USE_ERRNO if use_errno else 0)
                    _restype_ = c_int

                self._handle = dlopen(name, 2)  # RTLD_NOW, as ctypes
                self._func = _Func

            def __getattr__(self, name: str) -> object:
                if name.startswith("_"):
                    raise AttributeError(name)
                f = self._func((name, self))
                setattr(self, name, f)
                return f

        if c_ulong(7).value != 7 or len(create_string_buffer(b"ab", 4).raw) != 4 or len(create_string_buffer(3).raw) != 3:
            raise ImportError("unexpected _ctypes behaviour")
    except (ImportError, AttributeError, TypeError):
        from ctypes import (
            CDLL,
            Structure,
            addressof,
            byref,
            c_char,
            c_char_p,
            c_int,
            c_long,
            c_size_t,
            c_uint,
            c_uint32,
            c_uint64,
            c_ulong,
            c_ushort,
            c_void_p,
            create_string_buffer,
            get_errno,
        )

__all__ = ["CDLL", "Structure", "addressof", "byref", "c_char", "c_char_p", "c_int", "c_long", "c_size_t", "c_uint",
           "c_uint32", "c_uint64", "c_ulong", "c_ushort", "c_void_p", "create_string_buffer", "get_errno"]
