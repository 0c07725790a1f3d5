"""Grid layouts: ASCII maps in, arrays out, with errors that point at the offending character.

A map is a list of equal-length rows (or one string with a row per line) over these characters:

====  =========================================================================
``C``  the cat's starting cell (exactly one; the cell itself is empty)
``.``  an empty cell
``B``  the broom: stepping onto it costs a little, the episode goes on
``T``  the bathtub: stepping into it costs a lot and ends the episode
``M``  the meat: stepping onto it pays and ends the episode
``#``  a wall: moving into it is like moving off the grid (the cat stays put)
====  =========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Cell codes stored in Layout.cells (uint8). The start cell is EMPTY; Layout.start says where it is.
EMPTY, BROOM, BATHTUB, MEAT, WALL = 0, 1, 2, 3, 4

CHAR_TO_CODE = {".": EMPTY, "C": EMPTY, "B": BROOM, "T": BATHTUB, "M": MEAT, "#": WALL}
CODE_TO_CHAR = {EMPTY: ".", BROOM: "B", BATHTUB: "T", MEAT: "M", WALL: "#"}

# The lectures' grid: cat at (0, 0), broom at (0, 1), bathtub at (3, 2), meat at (4, 4).
DEFAULT_MAP = (
    "CB...",
    ".....",
    ".....",
    "..T..",
    "....M",
)


@dataclass(frozen=True, eq=False)
class Layout:
    """A parsed grid: what is in each cell and where the cat starts.

    Build one with :meth:`from_ascii` (or :func:`as_layout`) rather than by hand.
    """

    cells: np.ndarray
    """(rows, cols) uint8 array of cell codes (EMPTY, BROOM, BATHTUB, MEAT, WALL)."""
    start: tuple[int, int]
    """The cat's starting (row, col)."""

    def __post_init__(self) -> None:
        # A hand-built Layout is checked too: a bad one would give observations outside the space.
        cells = self.cells
        if not isinstance(cells, np.ndarray):
            raise TypeError(f"Layout.cells must be a 2-D uint8 numpy array, got {type(cells).__name__}.")
        if cells.ndim != 2 or cells.dtype != np.uint8 or cells.size == 0:
            got = f"{cells.dtype} array of shape {cells.shape}"
            raise ValueError(f"Layout.cells must be a non-empty 2-D uint8 array, got a {got}.")
        if not np.isin(cells, list(CODE_TO_CHAR)).all():
            got = np.unique(cells).tolist()
            raise ValueError(f"Layout.cells must hold only the codes {sorted(CODE_TO_CHAR)}, got {got}.")
        start = self.start
        ok = isinstance(start, tuple) and len(start) == 2 and all(type(x) is int for x in start)
        if not ok or not (0 <= start[0] < cells.shape[0] and 0 <= start[1] < cells.shape[1]):
            raise ValueError(f"Layout.start must be a (row, col) tuple of ints inside {cells.shape}, got {start!r}.")
        if cells[start] == WALL:
            raise ValueError(f"Layout.start {start} is a wall; the cat must start on a free cell.")

    @property
    def rows(self) -> int:
        return int(self.cells.shape[0])

    @property
    def cols(self) -> int:
        return int(self.cells.shape[1])

    @property
    def n_states(self) -> int:
        """Number of observations, ``rows * cols`` (wall cells included, they are just never visited)."""
        return self.rows * self.cols

    @property
    def start_state(self) -> int:
        return self.to_state(*self.start)

    def to_state(self, row: int, col: int) -> int:
        """The observation for cell (row, col): ``row * cols + col``."""
        return row * self.cols + col

    def to_position(self, state: int) -> tuple[int, int]:
        """The (row, col) of an observation; the inverse of :meth:`to_state`."""
        row, col = divmod(int(state), self.cols)
        return row, col

    def to_ascii(self) -> str:
        """The map as text, one row per line, with ``C`` on the start cell."""
        lines = [[CODE_TO_CHAR[int(code)] for code in row] for row in self.cells]
        lines[self.start[0]][self.start[1]] = "C"
        return "\n".join("".join(line) for line in lines)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        return self.start == other.start and np.array_equal(self.cells, other.cells)

    def __repr__(self) -> str:
        return f"Layout.from_ascii({self.to_ascii()!r})"

    @classmethod
    def default(cls) -> Layout:
        """The lectures' 5x5 grid (:data:`DEFAULT_MAP`)."""
        return cls.from_ascii(DEFAULT_MAP)

    @classmethod
    def from_ascii(cls, ascii_map: str | Sequence[str]) -> Layout:
        """Parse a map given as one string (a row per line) or as a sequence of row strings.

        Leading and trailing whitespace on each line, and blank lines, are ignored, so an indented
        triple-quoted string works.

        Raises:
            ValueError: if the map is empty, the rows have different lengths, a character is unknown,
                or there is not exactly one ``C``.
            TypeError: if the map is neither a string nor a sequence of strings.
        """
        lines = _split_lines(ascii_map)
        lengths = [len(line) for line in lines]
        if len(set(lengths)) != 1:
            raise ValueError(
                f"Ragged map: row lengths are {lengths}; expected every row to have the same length."
            )
        cells = np.zeros((len(lines), lengths[0]), dtype=np.uint8)
        cats = []
        for r, line in enumerate(lines):
            for c, char in enumerate(line):
                if char not in CHAR_TO_CODE:
                    raise ValueError(
                        f"Unknown map character {char!r} at (row {r}, col {c}) in row {line!r}; "
                        f"expected one of {''.join(CHAR_TO_CODE)!r}."
                    )
                cells[r, c] = CHAR_TO_CODE[char]
                if char == "C":
                    cats.append((r, c))
        if len(cats) != 1:
            where = f" at {cats}" if cats else ""
            raise ValueError(
                f"The map has {len(cats)} cats ('C'){where}; expected exactly one starting cell 'C'."
            )
        cells.setflags(write=False)
        return cls(cells=cells, start=cats[0])


def as_layout(layout: Layout | str | Sequence[str] | None) -> Layout:
    """Accept a Layout, an ASCII map, or None (the default grid) and return a Layout."""
    if layout is None:
        return Layout.default()
    if isinstance(layout, Layout):
        return layout
    return Layout.from_ascii(layout)


def _split_lines(ascii_map: str | Sequence[str]) -> list[str]:
    if isinstance(ascii_map, str):
        raw = ascii_map.splitlines()
    elif isinstance(ascii_map, Sequence) and all(isinstance(row, str) for row in ascii_map):
        raw = list(ascii_map)
    else:
        raise TypeError(
            f"A map must be a string or a sequence of row strings, got {type(ascii_map).__name__}: "
            f"{ascii_map!r}."
        )
    lines = [line.strip() for line in raw if line.strip()]
    if not lines:
        raise ValueError("The map is empty; expected at least one row containing a 'C'.")
    return lines
