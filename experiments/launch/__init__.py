"""Starting NNI: secure (nnictl with the dashboard and REST API on 127.0.0.1 only, through the Node preloads
loopback.js, ssh_guard.js and pairing.js), local (a local experiment run to its end from Python), remote (a search on SSH workers;
`python -m experiments.launch`), workers (check and prepare SSH workers)."""
