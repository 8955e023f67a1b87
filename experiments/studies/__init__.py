"""Studies of the tool itself, each a command (`python -m experiments.studies.<name> --help`):

benchmark           speed and memory of the harness against a bare PyTorch loop, measured side by side
search_efficiency   which search strategy finds a good model fastest (repeated short searches)
airbench_reference  the published airbench94 recipe, ported for the CPU: the yardstick of the airbench baseline
load, load_trial    many short trials through NNI's real machinery, nothing lost (load_trial trains nothing)
bf16_ops            is each op of the nas space right, and slower or faster, under bfloat16 autocast on this CPU
find_nonfinite      where training first turns NaN or infinite, layer by layer
width_speed         how training speed scales with the network's width
tta                 a checkpoint scored under each test-time augmentation mode
gpu_data, gpu_check the data and the one command for a lent GPU machine (never imports nni)
"""
