"""The bi-GRU attention text classifier (`caption classify`): the seminar's code, in the shape of
ilivans/tf-rnn-attention, on the shared attention module with the padding masked.

config.py the sizes; data.py the readers (aclImdb, TSV/CSV) and batches; synthetic.py the built-in
review set whose deciding words are known; model.py the network; train.py training and evaluation;
show.py the per-token attention as an HTML page and in terminal colours."""
