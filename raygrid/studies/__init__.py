"""The papers' experiments as readable walks over the stages; importing registers their stages."""

from raygrid.studies import aip, var

#: Graph builders by study name: ``builder(trial_config, resources, peers) -> StageSpec`` of the
#: trial's final stage; ``peers`` are the configs of every trial of the grid.
STUDIES = {"var": var.var_trial_graph, "aip": aip.aip_trial_graph}
