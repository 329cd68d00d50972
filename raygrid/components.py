"""Import every component package so that its classes register themselves.

Registration happens at import time (``@ATTACKS.register("pgd")`` and so on);
anything that needs the full registries (the config schema, ``raygrid list``, a
Ray worker running a stage) imports this module first.
"""

from raygrid import attacks, data, defenses, extractors, recommenders, studies  # noqa: F401
from raygrid.attacks import aip  # noqa: F401  (the AIP study's attacks: insa, expa, csema, taamr)
