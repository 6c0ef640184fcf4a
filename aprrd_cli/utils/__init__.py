"""Infrastructure every command shares and no reader of the method needs: atomic writes and
the sweep of leftover temporaries (``atomic``), folder locks (``locks``), signals held over
steps that must not be split (``interrupts``), the allocator setting (``allocator``)."""
