"""`python -m hyperprompt.eval --gin_file=... --gin.NAME=VALUE`: see main.py."""
import sys

from hyperprompt import main

if __name__ == '__main__':
  main.console_main(['eval', *sys.argv[1:]])
