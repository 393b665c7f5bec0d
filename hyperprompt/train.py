"""`python -m hyperprompt.train --gin_file=... --gin.NAME=VALUE`: see main.py."""
import sys

from hyperprompt import main

if __name__ == '__main__':
  main.console_main(['train', *sys.argv[1:]])
