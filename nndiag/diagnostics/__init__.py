"""One module per step of the recipe. Each measures (returns tables of numbers), decides (a pure
function from those numbers to a Verdict), and never prints or writes files."""
