"""The thin operator CLI: parse options, call one function, render. Nothing imports it."""
