"""The command line: run the proxy, check a config, decode a PROXY header."""
import argparse
import sys

from ._version import __version__
from .config import load_config
from .errors import ConfigError, SimpleProxyError
from .logs import LOG, setup_logging
from .master import needs_master, run_master
from .proxy import run_proxy
from .proxyproto import ProxyHeaderError, header_as_dict, parse_header
from .resolve import resolve_addresses


def build_arg_parser():
    parser = argparse.ArgumentParser(
        prog="simpleproxy",
        description="A TCP load balancer that speaks the PROXY protocol (v1 and v2).")
    parser.add_argument("config", nargs="?", help="the INI configuration file")
    parser.add_argument("-c", "--check", action="store_true",
                        help="check the configuration and exit (0 when valid), binding nothing")
    parser.add_argument("--resolve", action="store_true",
                        help="with -c: also resolve the servers' host names, as start-up does")
    parser.add_argument("--decode", metavar="HEX",
                        help="decode one PROXY header given in hex (spaces allowed), print it as JSON")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        help="override the config's log-level")
    parser.add_argument("--version", action="version", version="simpleproxy " + __version__)
    return parser


def decode_command(hex_text):
    """--decode: one JSON object on stdout and 0, or a one-line reason on stderr and 1."""
    import json
    try:
        data = bytes.fromhex("".join(hex_text.split()))
    except ValueError as exc:
        sys.stderr.write("simpleproxy: not hex: %s\n" % exc)
        return 1
    try:
        header = parse_header(data, eof=True)
    except ProxyHeaderError as exc:
        sys.stderr.write("simpleproxy: invalid PROXY header (%s): %s\n" % (exc.kind, exc.reason))
        return 1
    print(json.dumps(header_as_dict(header)))
    return 0


def main(argv=None):
    args = build_arg_parser().parse_args(argv)
    if args.decode is not None:
        return decode_command(args.decode)
    if not args.config:
        build_arg_parser().print_usage(sys.stderr)
        sys.stderr.write("simpleproxy: a configuration file is required\n")
        return 2
    try:
        config = load_config(args.config)
        if args.check:
            return check_command(config, args.resolve)
        setup_logging(args.log_level or config.global_settings.log_level,
                      target=config.global_settings.log_target)
        for warning in config.warnings:
            LOG.warning("%s", warning)
        if needs_master(config.global_settings):
            return run_master(config)
        return run_proxy(config)
    except ConfigError as exc:
        # Before the proxy runs, and when a server name does not resolve as it starts:
        # the lines go out as they are, one per problem, as -c prints them.
        for message in exc.messages:
            sys.stderr.write("%s\n" % message)
        return 1
    except SimpleProxyError as exc:
        LOG.error("%s", exc)
        return 1


def check_command(config, resolve):
    """-c: warnings on stderr, the verdict on stdout, 0; host names resolved only if asked."""
    if resolve:
        resolve_addresses(config)
    for warning in config.warnings:
        sys.stderr.write("warning: %s\n" % warning)
    print("Configuration file is valid: %s" % config.path)
    return 0
