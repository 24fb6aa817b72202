"""The lmma core simulator: functional execution and verification (machine.py), cycle/traffic/energy cost
of programs (cost.py), and the area/power model of LUT and MAC arrays calibrated to 28 nm (hw.py)."""
