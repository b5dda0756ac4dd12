"""Measurements of unrolled iterative estimation (Greff, Srivastava & Schmidhuber, ICLR 2017) on a
trained tinyhw net. Each analysis is a module with the same shape:

    compute(...)  -> a JSON-able result dict (the numbers)
    rows(result)  -> the flat rows of its CSV
    table(result) -> the lines printed to stdout
    plot(result, plt, path) -> its PNG figure (matplotlib optional: `pip install -e ".[plot]"`)
    run(args)     -> what `python -m train.analyze <name>` does with them

estimation  estimation error a_k - A per block (the paper's Figure 3)
lesion      val error with one block removed (Veit et al. 2016; Srivastava et al. 2015)
shuffle     val error after random swaps of blocks within a stage (Veit et al. 2016)
gates       transform/carry gate statistics of highway nets (Srivastava et al. 2015)
iterative   cos(F(h), -dL/dh) with the block removed (the headline) and through it, and
            ||F(h)|| / ||h|| per block (Jastrzebski et al. 2017); gradients.py: their loss
            gradient, free of float32 cancellation
iterations  val error and ||h|| after extra applications of each block, ||h|| block by block
unit_errors the estimation error's one definition, for conv nets and the char-LM
"""
