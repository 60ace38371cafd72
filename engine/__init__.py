"""PyTorch side of the PixelCNN studio: data, models, training, sampling.

Nothing here imports Qt; the GUI reaches the network only through the model
contract (images [N,1,28,28] in, logits of the same shape out).
"""
