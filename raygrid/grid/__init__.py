"""Ray Tune grids: one trial per grid point, shared stages through a broker, resources, resume."""
