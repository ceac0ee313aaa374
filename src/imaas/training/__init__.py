"""Training on the platform: labelled images in, a cleaned dataset, a trained, evaluated and exported model out."""
