"""Configuration: the recipe (YAML -> validated dataclasses, `--set` overrides, `module:attr` targets), the
bundled recipe library and the starter recipe (`nndiag recipes`, `nndiag init`), and editing a user's
recipe file (`lr-find --apply`). No torch: `nndiag validate` and `--help` stay fast.

May import: nndiag.errors, nndiag.formatting.
"""
