"""The tuning objective of tune_policy.py: curves compared at equal energy, not points.

Plain Python (no dependencies): `python3 -m unittest discover -s models -p 'test_*.py'`
(run by the `tuning_objective` test of the cluster suite).
"""

import math
import os
import tempfile
import unittest

import tune_policy as tp


def report(day, risk, energy, unserved, migrations=100, ping_pongs=0):
    return {"day": day, "risk": risk, "energy_over_oracle": energy, "overall_sla_violation_pct": unserved,
            "migrations": migrations, "ping_pongs": ping_pongs}


# A reference curve: unserved demand falls tenfold from 1.1 to 1.5 x the oracle's energy.
REFERENCE = {0.0: (1.5, 0.01, 0.0), 0.5: (1.3, 0.1, 0.0), 1.0: (1.1, 1.0, 0.0)}


class CurveAt(unittest.TestCase):
    def test_interpolates_on_a_log_scale_between_points(self):
        self.assertAlmostEqual(tp.curve_unserved_at(REFERENCE, 1.3), 0.1)
        # Half-way between 1.1 (1 %) and 1.3 (0.1 %) is the geometric mean, not the arithmetic one.
        self.assertAlmostEqual(tp.curve_unserved_at(REFERENCE, 1.2), math.sqrt(0.1), places=9)

    def test_extrapolates_from_the_end_segments_where_the_plain_lookup_has_nothing(self):
        self.assertIsNone(tp.shipped_unserved_at(REFERENCE, 1.0))
        self.assertAlmostEqual(tp.curve_unserved_at(REFERENCE, 1.0), 10 ** 0.5, places=9)
        self.assertAlmostEqual(tp.curve_unserved_at(REFERENCE, 1.6), 10 ** -2.5, places=9)

    def test_a_curve_of_fewer_than_two_usable_points_gives_nothing(self):
        self.assertIsNone(tp.curve_unserved_at({0.0: (1.5, 0.0, 0.0), 1.0: (1.1, 1.0, 0.0)}, 1.2))


class Objective(unittest.TestCase):
    def test_sliding_along_the_reference_curve_scores_zero(self):
        # Points of the reference curve itself, at other energies than its own points.
        runs = [report("d1", 0.2, 1.4, math.sqrt(0.001)), report("d1", 0.8, 1.2, math.sqrt(0.1))]
        self.assertAlmostEqual(tp.curve_objective(runs, REFERENCE, {}), 0.0, places=9)

    def test_half_the_unserved_demand_at_equal_energy_scores_log_one_half(self):
        runs = [report("d1", 0.5, 1.3, 0.05), report("d2", 0.5, 1.3, 0.05), report("d1", 1.0, 1.1, 0.5), report("d2", 1.0, 1.1, 0.5)]
        self.assertAlmostEqual(tp.curve_objective(runs, REFERENCE, {}), math.log(0.5), places=9)

    def test_moves_over_the_days_budget_and_ping_pong_are_penalised(self):
        on_curve = [report("d1", 0.5, 1.3, 0.1, migrations=900)]
        self.assertAlmostEqual(tp.curve_objective(on_curve, REFERENCE, {"d1": 1000.0}), 0.0, places=9)
        # 1,500 against a budget of 1,000: half the budget over.
        over = [report("d1", 0.5, 1.3, 0.1, migrations=1500)]
        self.assertAlmostEqual(tp.curve_objective(over, REFERENCE, {"d1": 1000.0}), 0.5 * tp.OVER_BUDGET_PENALTY, places=9)
        # Just over still costs the least penalty.
        barely = [report("d1", 0.5, 1.3, 0.1, migrations=1001)]
        self.assertAlmostEqual(tp.curve_objective(barely, REFERENCE, {"d1": 1000.0}), 0.1 * tp.OVER_BUDGET_PENALTY, places=9)
        pongs = [report("d1", 0.5, 1.3, 0.1, ping_pongs=2)]
        self.assertAlmostEqual(tp.curve_objective(pongs, REFERENCE, {}), 2 * tp.PING_PONG_PENALTY, places=9)

    def test_fewer_migrations_at_equal_energy_count_at_the_migration_weight(self):
        reference = {r: (e, u, 1000.0) for r, (e, u, _) in REFERENCE.items()}
        on_curve = [report("d1", 0.5, 1.3, 0.1, migrations=1000), report("d1", 1.0, 1.1, 1.0, migrations=1000)]
        self.assertAlmostEqual(tp.curve_objective(on_curve, reference, {}), 0.0, places=9)
        fewer = [report("d1", 0.5, 1.3, 0.1, migrations=800), report("d1", 1.0, 1.1, 1.0, migrations=800)]
        self.assertAlmostEqual(tp.curve_objective(fewer, reference, {}), tp.MIGRATION_WEIGHT * math.log(0.8), places=9)

    def test_a_curve_that_stops_short_of_the_references_ends_pays_for_the_gap(self):
        # Better at equal energy (less demand unserved) but its hot end 10 % above the
        # reference's and its cool end leaving twice the demand unserved.
        narrow = [report("d1", 0.0, 1.5, 0.02), report("d1", 1.0, 1.21, 0.1)]
        better_at_equal_energy = tp.curve_terms(narrow, REFERENCE)[0]
        self.assertLess(better_at_equal_energy, 0.0)
        hot, cool = tp.span_shortfall(tp.frontier(narrow), REFERENCE)
        self.assertAlmostEqual(hot, 0.1, places=9)
        self.assertAlmostEqual(cool, math.log(2.0), places=9)
        self.assertAlmostEqual(tp.curve_objective(narrow, REFERENCE, {}),
                               better_at_equal_energy + tp.SPAN_ENERGY_WEIGHT * 0.1 + tp.SPAN_UNSERVED_WEIGHT * math.log(2.0), places=9)
        # Reaching past the ends costs nothing.
        self.assertEqual(tp.span_shortfall({0.0: (1.6, 0.005, 0.0), 1.0: (1.05, 0.9, 0.0)}, REFERENCE), (0.0, 0.0))

    def test_migrations_interpolate_linearly_in_energy_and_hold_at_the_ends(self):
        reference = {0.0: (1.5, 0.01, 1000.0), 1.0: (1.1, 1.0, 2000.0)}
        self.assertAlmostEqual(tp.curve_migrations_at(reference, 1.2), 1750.0, places=9)
        self.assertEqual(tp.curve_migrations_at(reference, 1.0), 2000.0)
        self.assertEqual(tp.curve_migrations_at(reference, 1.7), 1000.0)
        self.assertIsNone(tp.curve_migrations_at({}, 1.2))


class Pays(unittest.TestCase):
    def row(self, over=(), ping_pongs=0):
        return {"over_budget_days": list(over), "ping_pongs": ping_pongs}

    def test_a_clear_combined_gain_without_more_unserved_demand_within_budget(self):
        ok = {"combined": 0.9, "geometric_mean_ratio": 0.97, "learned": [self.row(), self.row()]}
        self.assertTrue(tp.set_pays(ok))
        # A gain in migrations bought with more unserved demand does not pay.
        self.assertFalse(tp.set_pays(dict(ok, geometric_mean_ratio=1.02)))
        self.assertFalse(tp.set_pays(dict(ok, combined=0.96)))
        self.assertFalse(tp.set_pays(dict(ok, combined=None)))
        self.assertFalse(tp.set_pays(dict(ok, learned=[self.row(), self.row(over=["20110322"])])))
        self.assertFalse(tp.set_pays(dict(ok, learned=[self.row(ping_pongs=1)])))
        # A curve that no longer reaches the shipped curve's ends does not pay, whatever its gain.
        self.assertTrue(tp.set_pays(dict(ok, span_shortfall={"hot_end_energy": 0.005, "cool_end_log_unserved": 0.2})))
        self.assertFalse(tp.set_pays(dict(ok, span_shortfall={"hot_end_energy": 0.05, "cool_end_log_unserved": 0.0})))
        self.assertFalse(tp.set_pays(dict(ok, span_shortfall={"hot_end_energy": 0.0, "cool_end_log_unserved": 1.3})))


class Budgets(unittest.TestCase):
    def test_a_tenth_of_the_fewest_migrations_of_a_policy_that_migrates(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "cloudsim"))
            with open(os.path.join(d, "cloudsim", "planetlab-public-days.csv"), "w") as f:
                f.write("policy,day,migrations\nA,20110303,27649\nB,20110303,25000\nNone,20110303,0\nA,20110306,21661\n")
            self.assertEqual(tp.migration_budgets(d), {"20110303": 2500.0, "20110306": 2166.1})
            self.assertEqual(tp.migration_budgets(os.path.join(d, "missing")), {})


class Settings(unittest.TestCase):
    def test_each_search_space_round_trips_through_the_file_it_writes(self):
        for space in tp.SPACES.values():
            x0 = [tp.to_unit(v, lo, hi, log) for _, v, lo, hi, log in space]
            shipped = tp.settings(x0, space)
            for name, v, *_ in space:
                self.assertAlmostEqual(shipped[name], v, places=9)
            back = tp.read_toml_settings(tp.toml_text(shipped))
            self.assertEqual(back.keys(), shipped.keys())
            for k in shipped:
                self.assertAlmostEqual(back[k], shipped[k], places=12)

    def test_dotted_settings_go_to_their_own_tables(self):
        text = tp.toml_text({"knob.exit_share": 0.5, "cooldown_s": 60.0, "weights.fit": 2.0})
        self.assertEqual(text, "cooldown_s = 60.0\n\n[knob]\nexit_share = 0.5\n\n[weights]\nfit = 2.0\n")

    def test_the_knob_references_are_the_shapes_the_repository_ships(self):
        # KNOB_SPACE's values are the shipped (learned) shape the packaged coordinator.toml spells
        # out, and knob_hand_set() the one knob-hand-set.toml puts back: a search judged against a
        # shape that is not the one shipped would report gains nobody gets.
        import tomllib

        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "..", "packaging", "coordinator.toml"), "rb") as f:
            packaged = tomllib.load(f)["policy"]["presage"]["knob"]
        with open(os.path.join(here, "knob-hand-set.toml"), "rb") as f:
            hand_set = tomllib.load(f)["knob"]
        knob_hand_set = tp.knob_hand_set()
        self.assertEqual(set(knob_hand_set), {name for name, *_ in tp.KNOB_SPACE})
        for name, v, lo, hi, _ in tp.KNOB_SPACE:
            key = name.split(".", 1)[1]
            self.assertAlmostEqual(packaged[key], v, places=12, msg=name)
            self.assertAlmostEqual(hand_set[key], knob_hand_set[name], places=12, msg=name)
            self.assertTrue(lo <= v <= hi and lo <= knob_hand_set[name] <= hi, name)
        self.assertNotEqual({n: v for n, v, *_ in tp.KNOB_SPACE}, knob_hand_set)


if __name__ == "__main__":
    unittest.main()
