"""The residual-learning science: degradation runs, gradient flow, layer responses, Grad-CAM."""
