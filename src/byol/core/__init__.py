"""What every layer of byol stands on: errors, writing and safely loading files, progress
bars, device and precision, the distributed helpers and the schedules. It imports nothing
from the rest of byol."""
