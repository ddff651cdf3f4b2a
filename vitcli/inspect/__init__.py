"""The paper's analysis figures (docs/reference.md §8, paper section 4.5).

`attention` reads every layer's attention weights out of a vitcli model; `rollout`,
`distance`, `posemb` and `filters` turn weights into the numbers behind each figure
(plain numpy, testable on constructed inputs); `figures` draws them with matplotlib;
`outputs` runs each `vitcli inspect` command as a library call that writes files.
"""
