"""The multilingual family: the ``translation_multi_langtok`` task (many-to-many with language
tokens, temperature sampling), its raw-text data, and random aligned substitution (RAS). mRASP is
this task with ``--ras-dicts``; used by mRASP2 and LaSS (``ptnmt_fairseq/lass``); next by CSP."""
