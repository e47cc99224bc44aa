"""HTTP/1.1 wire handling: the incremental parser twins and their shared error type.

Pick the parser through ``fastgw._speedups`` (compiled or pure); the names here are
the ones both twins share.
"""

from fastgw.http.errors import END, ParseError

__all__ = ["END", "ParseError"]
