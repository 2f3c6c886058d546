"""The built-ins a recipe can name: datasets (`data.name`: digits, spiral, mnist1d, tokens, torchvision
sets, image folders, CSV files) and models (`model.name`: linear, mlp, cnn, transformer, gru,
huggingface, torchvision models), with the weight-init lecture's initialisations. Everything is
bundled or generated offline.

May import: nndiag.errors, nndiag.config.
"""
