"""The client's command line (see main.py)."""

import os

# gRPC's C core prints its own log lines (e.g. "Handshake failed ... WRONG_VERSION_NUMBER") on
# stderr before vimark's one-line message; a command says what went wrong itself. Set
# GRPC_VERBOSITY=ERROR (or DEBUG) to see them again. Set here, before anything imports grpc.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
