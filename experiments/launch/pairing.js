// Give each NNI trial the parameters NNI records for it, and keep parameter ids unique across `nnictl resume`.
// A Node preload, loaded into NNI's manager through NODE_OPTIONS next to loopback.js and ssh_guard.js
// (experiments/launch/secure.py sets all three up; nothing of NNI is patched on disk):
//
//     NODE_OPTIONS="--require /path/to/experiments/launch/pairing.js" nnictl create --config nni_configs/fmnist.yml
//
// Two faults of NNI 3.0's manager, both in its own JavaScript:
//
// 1. Mis-paired parameters (upstream microsoft/nni#5726, #5693). The v3 training-service adapter
//    (nni_node/training_service/v3/compat.js, V3asV1.submitTrialJob) puts a new trial's parameters on one queue and
//    hands them to whichever trial asks first, while the manager records them for the trial it created. With
//    trialConcurrency > 1 about half the trials train one set while the dashboard, the REST API, `nnictl experiment
//    export` and the database name another. On `nnictl resume` NNI re-runs a trial whose end it had not recorded
//    with the recorded set: another trial's parameters (seen in tests/test_experiment_resume.py).
//    The fix: a new trial's id and environment are chosen before it is created, and it goes through the adapter's
//    own resume path, which gives a trial the parameters allocated to its id.
// 2. Parameter ids reused after resume. NNI's resume tells the tuner's dispatcher the largest parameter id among the
//    trials it re-runs only (nni_node/core/nnimanager.js, addRecoveredTrialJob; nni/recoverable.py); the ids of
//    trials that had ended are handed out again, and a resumed experiment holds two trials with one id.
//    The fix: every recorded trial's parameters go to the dispatcher with the re-run ones, so new ids continue after
//    the largest and a late result of any earlier trial reaches the tuner with its own parameters.
//
// Each patch checks that NNI's code has the shape it was written for; otherwise it leaves NNI alone and says so on
// stderr (the experiment's log/nnictl_stderr.log). tests/test_pairing.py runs real experiments with and without it.
'use strict';

const Module = require('module');
const path = require('path');

const script = process.argv[1] || '';
const isManager = path.basename(script) === 'main.js' && path.basename(path.dirname(script)) === 'nni_node';
const patched = new WeakSet();

function note(message) {
    process.stderr.write(`cnnsearch pairing.js: ${message}\n`);
}

// proto[name] = make(original), once, if NNI's original still contains `shape` (the code the patch was written for)
function replaceMethod(proto, name, shape, make) {
    if (!proto || patched.has(proto)) {
        return;
    }
    patched.add(proto);
    const original = proto[name];
    if (typeof original !== 'function' || !shape.test(original)) {
        note(`NNI's ${name} is not the one this preload knows: left as NNI has it`);
        return;
    }
    proto[name] = make(original);
}

// NNI's own trial-id maker (common/utils.js uniqueString), resolved as `parent` (the module requiring compat) would
function idMaker(parent) {
    try {
        const make = Module._load('common/utils', parent).uniqueString;
        return typeof make === 'function' ? make : null;
    } catch (error) {
        return null;
    }
}

// 1. a new trial is created under an id chosen first, with its parameters allocated to that id
function pairParameters(V3asV1, uniqueString) {
    if (uniqueString === null) {
        note('NNI\'s common/utils uniqueString not found: trial parameters left as NNI pairs them');
        return;
    }
    replaceMethod(V3asV1 && V3asV1.prototype, 'submitTrialJob', /form\.id && form\.envId/, submit => async function (form) {
        if (form.id && form.envId) {              // NNI's own resume of a recorded trial: already paired by id
            return submit.call(this, form);
        }
        await this.startDeferred.promise;
        let envId = this.schedule();
        while (envId === null) {                  // no environment yet: wait as NNI does
            await new Promise(resolve => setTimeout(resolve, 1000));
            envId = this.schedule();
        }
        let id = uniqueString(5);                 // a trial id as NNI's own training services make them
        while (this.trialJobs[id] !== undefined) {
            id = uniqueString(5);
        }
        // allocated before the trial exists: its request for parameters can only be answered with its own
        this.allocatedParameters.set(id, form.hyperParameters.value);
        const trial = await submit.call(this, { ...form, id, envId });
        if (trial.id !== id) {                    // NNI could not create it under that id and made another trial
            this.allocatedParameters.delete(id);
            note(`trial ${id} could not be created in ${envId}; NNI started ${trial.id} with its own pairing`);
        }
        return trial;
    });
}

// 2. on resume the dispatcher learns every recorded trial's parameters and id, not only the re-run ones'
function continueParameterIds(NNIManager) {
    replaceMethod(NNIManager && NNIManager.prototype, 'addRecoveredTrialJob', /trialDataForResume/, recover => function (allTrialJobs) {
        const recovered = recover.call(this, allTrialJobs);
        let resumed;
        try {
            resumed = JSON.parse(this.trialDataForResume || '[]');
        } catch (error) {
            note(`trial data for resume unreadable (${error.message}); parameter ids left to NNI`);
            return recovered;
        }
        const known = new Set(resumed.map(p => p.parameter_id));
        for (const job of allTrialJobs) {
            let record;
            try {
                record = JSON.parse((job.hyperParameters || [])[0]);
            } catch (error) {
                continue;                         // a trial without parameters (customised, or never started)
            }
            if (record && Number.isInteger(record.parameter_id) && !known.has(record.parameter_id)) {
                known.add(record.parameter_id);
                resumed.push({ parameter_id: record.parameter_id, parameter_source: 'resumed',
                               parameters: record.parameters, parameter_index: record.parameter_index });
            }
        }
        this.trialDataForResume = JSON.stringify(resumed);
        return recovered;                         // the count of trials to re-run is NNI's own
    });
}

if (isManager) {
    const load = Module._load;
    Module._load = function (request) {
        const exported = load.apply(this, arguments);
        if (typeof request === 'string') {
            if (request.endsWith('v3/compat') && exported) {
                pairParameters(exported.V3asV1, idMaker(arguments[1]));
            } else if (request === 'core/nnimanager' && exported) {
                continueParameterIds(exported.NNIManager);
            }
        }
        return exported;
    };
}
