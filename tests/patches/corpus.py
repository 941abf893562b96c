"""Malicious diffs: each must be refused before anything is written.

The sample repository these run against has (see ``add_traps``) a symlink ``docs -> ../outside``,
a symlink ``escape -> /tmp`` and a submodule entry ``vendor/lib``, next to a directory
``outside/`` holding a file that must never change.
"""

from __future__ import annotations

import base64
import zlib

CAP = 1024 * 1024


def _new_file(path: str, body: str = "pwned\n", mode: str = "100644") -> str:
    lines = body.splitlines()
    added = "".join(f"+{line}\n" for line in lines)
    return (f"diff --git a/{path} b/{path}\nnew file mode {mode}\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n{added}")


def _new_quoted(quoted_a: str, quoted_b: str) -> str:
    return (f"diff --git {quoted_a} {quoted_b}\nnew file mode 100644\n--- /dev/null\n"
            f"+++ {quoted_b}\n@@ -0,0 +1 @@\n+pwned\n")


def _binary_block(payload: bytes, declared: int | None = None, kind: str = "literal") -> str:
    data = zlib.compress(payload, 9)
    lines = []
    for i in range(0, len(data), 52):
        chunk = data[i:i + 52]
        length = chr(ord("A") + len(chunk) - 1) if len(chunk) <= 26 else chr(ord("a") + len(chunk) - 27)
        lines.append(length + base64.b85encode(chunk, pad=True).decode())
    size = len(payload) if declared is None else declared
    return f"GIT binary patch\n{kind} {size}\n" + "\n".join(lines) + "\n\n"


def _binary(path: str, payload: bytes, declared: int | None = None, kind: str = "literal") -> str:
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0000000..1111111\n"
            + _binary_block(payload, declared, kind))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


SYMLINK_NEW = ("diff --git a/link b/link\nnew file mode 120000\n--- /dev/null\n+++ b/link\n"
               "@@ -0,0 +1 @@\n+../outside\n\\ No newline at end of file\n")
CALC_EDIT_HUNK = "@@ -1 +1 @@\n-\"\"\"A tiny module the sample tests cover.\"\"\"\n+\"\"\"pwned\"\"\"\n"

CORPUS: dict[str, bytes] = {
    # --- traversal ---------------------------------------------------------------------------------
    "traversal new file": _new_file("../outside/pwned").encode(),
    "traversal deep": _new_file("../../../../tmp/pitstop-pwned").encode(),
    "traversal traditional": b"--- a/../outside/victim.txt\n+++ b/../outside/victim.txt\n"
                             b"@@ -1 +1 @@\n-keep\n+pwned\n",
    "traversal via subdir": _new_file("tests/../../outside/pwned").encode(),
    "dot component": ("diff --git a/./calc.py b/./calc.py\n--- a/./calc.py\n+++ b/./calc.py\n"
                      + CALC_EDIT_HUNK).encode(),
    "empty component": (b"diff --git a/tests//x.py b/tests//x.py\nnew file mode 100644\n"
                        b"--- /dev/null\n+++ b/tests//x.py\n@@ -0,0 +1 @@\n+x = 1\n"),
    "bare dotdot": _new_file("..").encode(),
    "octal-quoted dotdot": _new_quoted('"a/\\056\\056/outside/pwned"',
                                       '"b/\\056\\056/outside/pwned"').encode(),
    "rename out": (b"diff --git a/calc.py b/../outside/calc.py\nsimilarity index 100%\n"
                   b"rename from calc.py\nrename to ../outside/calc.py\n"),
    "copy out": (b"diff --git a/calc.py b/../outside/copy.py\nsimilarity index 100%\n"
                 b"copy from calc.py\ncopy to ../outside/copy.py\n"),
    "rename in from outside": (b"diff --git a/../outside/victim.txt b/stolen.txt\n"
                               b"similarity index 100%\nrename from ../outside/victim.txt\n"
                               b"rename to stolen.txt\n"),
    "copy in from absolute": (b"diff --git a/etc/passwd b/passwd\nsimilarity index 100%\n"
                              b"copy from /etc/passwd\ncopy to passwd\n"),
    "backslash traversal": _new_file("..\\outside\\pwned").encode(),
    # --- absolute paths ------------------------------------------------------------------------------
    "absolute git header": _new_file("/tmp/pitstop-pwned").encode(),
    "absolute traditional": b"--- /dev/null\n+++ b//tmp/pitstop-pwned\n@@ -0,0 +1 @@\n+pwned\n",
    "drive letter": _new_file("C:/Windows/pwned").encode(),
    "home relative": _new_file("~/.bashrc").encode(),
    # --- .git ------------------------------------------------------------------------------------
    ".git config": (b"diff --git a/.git/config b/.git/config\n--- a/.git/config\n"
                    b"+++ b/.git/config\n@@ -1 +1,2 @@\n [core]\n+\tfsmonitor = touch /tmp/x\n"
                    ),
    ".git hook": _new_file(".git/hooks/post-checkout", "#!/bin/sh\ntouch /tmp/pwned",
                           "100755").encode(),
    ".GIT case": _new_file(".GIT/hooks/pre-commit").encode(),
    "nested .git": _new_file("tests/.git/config").encode(),
    ".git trailing dot": _new_file(".git./hooks/pre-commit").encode(),
    ".git trailing space": _new_quoted('"a/.git /config"', '"b/.git /config"').encode(),
    "ntfs short name": _new_file("GIT~1/config").encode(),
    "hfs ignorable": _new_file(".g\u200cit/config").encode(),
    "fullwidth dot git": _new_file("\uff0egit/config").encode(),
    "quoted .git": _new_quoted('"a/.git/hooks/pre-commit"', '"b/.git/hooks/pre-commit"').encode(),
    "the .git file": _new_file(".git").encode(),
    "rename into .git": (b"diff --git a/calc.py b/.git/hooks/pre-commit\nsimilarity index 100%\n"
                         b"rename from calc.py\nrename to .git/hooks/pre-commit\n"),
    # --- symlinks --------------------------------------------------------------------------------
    "new symlink": SYMLINK_NEW.encode(),
    "symlink then write-through": (SYMLINK_NEW + _new_file("link/pwned")).encode(),
    "mode change to symlink": b"diff --git a/calc.py b/calc.py\nold mode 100644\nnew mode 120000\n",
    "write through base symlink": _new_file("docs/pwned").encode(),
    "edit base symlink target": (b"diff --git a/escape b/escape\n--- a/escape\n+++ b/escape\n"
                                 b"@@ -1 +1 @@\n-/tmp\n\\ No newline at end of file\n"
                                 b"+/etc\n\\ No newline at end of file\n"),
    "delete symlink": (b"diff --git a/docs b/docs\ndeleted file mode 120000\n--- a/docs\n"
                       b"+++ /dev/null\n@@ -1 +0,0 @@\n-../outside\n"
                       b"\\ No newline at end of file\n"),
    "rename base symlink": (b"diff --git a/docs b/docs2\nsimilarity index 100%\n"
                            b"rename from docs\nrename to docs2\n"),
    "traditional write through symlink": b"--- /dev/null\n+++ b/escape/pitstop-pwned\n"
                                         b"@@ -0,0 +1 @@\n+pwned\n",
    # --- submodules ----------------------------------------------------------------------------
    "new gitlink": (b"diff --git a/vendor/evil b/vendor/evil\nnew file mode 160000\n"
                    b"index 0000000..1234567\n--- /dev/null\n+++ b/vendor/evil\n@@ -0,0 +1 @@\n"
                    b"+Subproject commit 1234567890123456789012345678901234567890\n"),
    ".gitmodules": _new_file(".gitmodules", '[submodule "x"]\n\tpath = x\n'
                                            "\turl = ext::sh -c touch% /tmp/pwned").encode(),
    ".GitModules case": _new_file("sub/.GitModules").encode(),
    "write into submodule": _new_file("vendor/lib/pwned").encode(),
    "mode change to gitlink": b"diff --git a/calc.py b/calc.py\nold mode 100644\nnew mode 160000\n",
    "directory mode": b"diff --git a/calc.py b/calc.py\nold mode 100644\nnew mode 040000\n",
    # --- binaries --------------------------------------------------------------------------------
    "huge declared literal": _binary("big.bin", b"x" * 10, declared=50 * CAP).encode(),
    "huge honest literal": _binary("big.bin", b"\0" * (2 * CAP)).encode(),
    "literal lying small": _binary("big.bin", b"\0" * (2 * CAP), declared=10).encode(),
    "huge delta result": _binary("big.bin", _varint(10) + _varint(100 * CAP) + b"\x00",
                                 kind="delta", declared=20).encode(),
    "binary without content": b"diff --git a/img.png b/img.png\nnew file mode 100644\n"
                              b"Binary files /dev/null and b/img.png differ\n",
    "malformed base85": b"diff --git a/x.bin b/x.bin\nnew file mode 100644\nGIT binary patch\n"
                        b"literal 4\nz!!!!!!\n\n",
    # --- CRLF and encodings ----------------------------------------------------------------------
    "crlf everywhere": _new_file("crlf.txt").replace("\n", "\r\n").encode(),
    "crlf in path line": b"diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\r\n"
                         + CALC_EDIT_HUNK.encode(),
    "quoted nul": _new_quoted('"a/calc\\000.py"', '"b/calc\\000.py"').encode(),
    "quoted newline": _new_quoted('"a/evil\\nname"', '"b/evil\\nname"').encode(),
    "quoted escape sequence": _new_quoted('"a/\\033[31mred"', '"b/\\033[31mred"').encode(),
    "latin-1 header": _new_file("caf\u00e9.py").encode("latin-1"),
    "quoted invalid utf-8": _new_quoted('"a/\\377.py"', '"b/\\377.py"').encode(),
    "rtl override": _new_file("gpj.\u202eexe.py").encode(),
    "nfd name": _new_file("cafe\u0301.py").encode(),
    "nbsp in name": _new_file("calc\u00a0.py").encode(),
    "unknown header line": (b"diff --git a/calc.py b/calc.py\nx-pitstop-ignore: me\n"
                            b"--- a/calc.py\n+++ b/calc.py\n" + CALC_EDIT_HUNK.encode()),
    "hunk counts lie": (b"diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n"
                        b"@@ -1,1 +1,9 @@\n-x\n+y\n" + _new_file("../outside/pwned").encode()),
    "empty name": b"diff --git a/ b/\nnew file mode 100644\n--- /dev/null\n+++ b/\n"
                  b"@@ -0,0 +1 @@\n+x\n",
    "nothing but prose": b"Please apply this fix, it is totally safe.\n",
}
