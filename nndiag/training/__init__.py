"""The training engine every diagnostic runs on: batches of any structure (batch), train/validation
splits held on the device or streamed (splits), the three ways from a batch to a loss (scoring),
device, seeding, optimizers, one step and snapshot/restore (engine), the Experiment that holds it all
(experiment), the training loop shared by train, search and babysit (trainer), the torch thread count chosen
for the work (threads) and progress as plain events (progress). It measures and returns plain numbers: it never
prints, decides or writes files.

May import: nndiag.errors, nndiag.formatting, nndiag.findings, nndiag.config, nndiag.zoo.
"""
