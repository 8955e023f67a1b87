// Keep NNI's manager alive when a remote worker's SSH connection breaks. A Node preload, loaded into NNI's node
// process through NODE_OPTIONS next to loopback.js (experiments/secure.py sets both up; nothing of NNI is patched on
// disk):
//
//     NODE_OPTIONS="--require /path/to/experiments/ssh_guard.js" nnictl create --config remote.yml
//
// NNI 3.0's remote training service (nni_node/training_service/remote_v3/ssh.js) opens one ssh2 Client per worker
// and never listens for its 'error' event. When a worker dies and the kernel resets its SSH connection (ECONNRESET:
// the machine, its sshd or the network went away with data in flight), Node treats the unhandled 'error' as fatal:
// the manager exits, the dashboard and REST API with it, and the experiment stops while the other workers' trials
// still run (2 of 8 runs of tests/test_remote_failure.py before this preload). With it, every ssh2 Client gets an
// 'error' listener that writes the error to stderr (the experiment's log/nnictl_stderr.log); NNI then handles the
// lost worker as it does a cleanly closed connection: its running trials become USER_CANCELED, it is not used again,
// and the experiment goes on with the other workers. Errors NNI already waits for (a refused connect) still reach it.
'use strict';

const Module = require('module');

const guarded = new WeakSet();

function note(message) {
    process.stderr.write(`cnnsearch ssh_guard.js: ${message}\n`);
}

function guard(ssh2) {
    const Client = ssh2 && ssh2.Client;
    if (typeof Client !== 'function' || guarded.has(Client)) {
        return;
    }
    guarded.add(Client);
    const connect = Client.prototype.connect;
    Client.prototype.connect = function (config, ...rest) {
        if (!guarded.has(this)) {
            guarded.add(this);
            const where = `${config && config.host}:${(config && config.port) || 22}`;
            this.on('error', error => {
                note(`SSH connection to ${where}: ${error.code || error.message} (handled: the manager goes on)`);
            });
        }
        return connect.call(this, config, ...rest);
    };
}

const load = Module._load;
Module._load = function (request) {
    const exported = load.apply(this, arguments);
    if (request === 'ssh2') {
        guard(exported);
    }
    return exported;
};
