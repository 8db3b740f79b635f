"""The attention explorer: one self-contained HTML page (scripts, styles and images inline, no
network request) that shows, word by word, where each model looks.

    maps.py     quantised maps, per-word figures (peak, entropy), coverage, the collapse measure
    record.py   an image's record: its picture and, per model, every beam's words and maps
    text.py     a text source's record: the seq2seq alignment matrix
    page.py     the page: the records as JSON (<script id="attention-data">), the viewer inline
    schema.md   the JSON the page embeds and exports, field by field
"""
