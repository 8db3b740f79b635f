"""The image model of Show, Attend and Tell: encoders, the attention decoder, the captioner, losses."""
