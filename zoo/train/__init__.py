"""The one trainer of the zoo: mesh, optimizer, checkpoints, metrics and the training loop.

Tasks (`zoo.tasks`) supply the model, loss, eval metrics and data; `train.py` is the CLI.
"""
