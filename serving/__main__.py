import quiet
from serving.server import main

# Before the workers are forked and load the model: they inherit the filters.
quiet.install()
main()
