"""Fit an MCGSM to causal neighbourhoods of an embedded photograph.

Prints the held-out negative log-likelihood in bits per pixel of the whitened
pixel values (dequantised 8-bit intensities scaled to [0, 1)).
"""

import numpy as np

from ride import MCGSM, WhiteningPreconditioner
from ride.datasets import dequantize, load_image
from ride.neighborhoods import causal_masks, extract

rng = np.random.default_rng(0)
image = dequantize(load_image("camera"), random_state=rng) / 256.0
input_mask, output_mask = causal_masks(5)
inputs, outputs = extract(image[None, :, :, None], input_mask, output_mask)
X = inputs.reshape(-1, inputs.shape[-1])
Y = outputs.reshape(-1, outputs.shape[-1])
order = rng.permutation(len(X))
train, test = order[:40000], order[40000:60000]

pre = WhiteningPreconditioner().fit(X[train], Y[train])
model = MCGSM(X.shape[1], 1, num_components=8, num_scales=4, random_state=0, verbose=1)
model.fit(*pre.transform(X[train], Y[train]), max_iter=200)
print(f"held-out: {model.evaluate(X[test], Y[test], pre):.3f} bit/pixel "
      "(continuous density of intensities in [0, 1))")
