"""raygrid: experiment grids on how adversarial product images change visual recommenders.

The package is organised in data-flow order (see ARCHITECTURE.md): ``config`` ->
``data`` -> ``extractors`` -> ``attacks`` -> ``defenses`` -> ``recommenders`` ->
``metrics`` -> ``studies`` -> ``pipeline`` -> ``grid`` / ``tracking`` -> ``reports``
-> ``cli``. Importing :mod:`raygrid` itself is cheap; components register
themselves when :mod:`raygrid.components` is imported.
"""

__version__ = "0.1.0"
