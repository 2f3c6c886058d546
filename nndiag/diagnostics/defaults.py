"""The defaults of every diagnostic's options, defined once: the diagnostics, the Python API's signatures,
the CLI's flags, the callbacks and the finding codes' rules (`{defaults.NAME}`) all read them here.
Standard library only, so that `nndiag --help` imports no torch.
"""

# check-loss
CHECK_LOSS_BATCHES = 10  # batches measured at initialisation
CHECK_LOSS_TOLERANCE = 1.0  # allowed relative excess over the expected loss (and the same log-ratio below it): within 2x

# overfit-small
OVERFIT_BATCHES = 5  # minibatches in the subset (the notes say 5-10)
OVERFIT_STEPS = 1000  # optimizer steps at most; the run stops as soon as it passes
OVERFIT_TARGET = 0.1  # pass when the subset loss is at most this fraction of its initial value (and accuracy is 100%)

# lr-find
LR_FIND_START = 1e-7  # first LR of the range test (fastai's)
LR_FIND_END = 10.0  # last LR of the range test (fastai's, torch-lr-finder's)
LR_FIND_STEPS = 100  # LR points in the range test (fastai, torch-lr-finder, Lightning)
LR_FIND_MODE = "exp"  # exp (geometric spacing) | linear
LR_FIND_BATCHES_PER_LR = 4  # optimizer steps at each LR point; the point's loss is their mean (fastai 1; 4: half the noise)
LR_FIND_CANDIDATE_STEPS = 100  # iterations per candidate LR (the notes: "~100 iterations")
LR_FIND_REFINE_STEPS = 100  # iterations per trial LR of the refine stage (the notes' "~100 iterations"); 0: no refine stage

# probe
PROBE_BATCHES = 2  # batches probed forward + backward at the current weights
PROBE_STEPS = 5  # optimizer steps afterwards, for the update/weight ratio

# probe --init-experiment (the weight-init lecture's setting)
INIT_WIDTH = 4096  # hidden units per layer (the lecture's)
INIT_DEPTH = 6  # hidden layers (the lecture's dims = [4096] * 7)
INIT_SAMPLES = 16  # rows of Gaussian input (the lecture's x = np.random.randn(16, dims[0]))
