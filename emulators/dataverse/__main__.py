"""``python -m emulators.dataverse --port 0`` serves the Dataverse emulator on 127.0.0.1."""

from emulators.common import main
from emulators.dataverse import DataverseEmulator

main(DataverseEmulator)
