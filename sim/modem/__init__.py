"""Simulated cellular modules (Quectel EC2x, SIMCom SIM7600) on a pty, with real TCP sockets over a
simulated radio. See `sim.modem.simulator` for the API and `sim.modem.serve` for `tpe sim modem`."""

from sim.modem.network import ConditionsError, NetworkConditions, csq_rssi
from sim.modem.simulator import DIALECTS, ModemSimulator, ModemSimulatorError, SimulatorStatus
from sim.modem.sockets import SocketTraffic

__all__ = ["DIALECTS", "ConditionsError", "ModemSimulator", "ModemSimulatorError", "NetworkConditions",
           "SimulatorStatus", "SocketTraffic", "csq_rssi"]
