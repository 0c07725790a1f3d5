"""Value iteration: the default grid's optimum and hand-worked small layouts, slips included."""

import numpy as np
import pytest

from textenv.gridworld import DOWN, RIGHT, UP, policy_path, policy_return, value_iteration


def test_default_grid_undiscounted_optimum_is_100_avoiding_the_broom():
    solution = value_iteration(gamma=1.0)
    assert solution.start_return == pytest.approx(100.0)
    path = policy_path(solution.policy)
    assert len(path) == 9  # 8 moves: the Manhattan distance, no detour needed
    assert (0, 1) not in path and (3, 2) not in path  # neither broom nor bathtub
    assert policy_return(solution.policy) == 100.0


def test_default_grid_discounted_optimum():
    solution = value_iteration(gamma=0.99)
    assert solution.start_return == pytest.approx(100 * 0.99**7)  # the meat is paid on the 8th step
    assert policy_return(solution.policy, gamma=0.99) == pytest.approx(100 * 0.99**7)
    assert solution.values[24] == 0.0 and solution.values[17] == 0.0  # meat and bathtub end the episode


def test_hand_worked_layout_where_the_broom_is_on_the_way():
    # C B M in a row: right twice pays -1 then +100; there is no other way to the meat.
    solution = value_iteration("CBM", gamma=0.9)
    assert solution.start_return == pytest.approx(-1 + 0.9 * 100)
    assert solution.value_grid[0].tolist() == pytest.approx([89.0, 100.0, 0.0])
    assert solution.policy[:2].tolist() == [RIGHT, RIGHT]
    assert policy_return(solution.policy, "CBM") == 99.0


def test_hand_worked_layout_going_around_the_broom():
    # C.T / B.M: right, down, right earns 100 * gamma**2; via the broom it is 100 * gamma**2 - 1.
    solution = value_iteration("C.T\nB.M", gamma=0.5)
    assert solution.start_return == pytest.approx(25.0)
    assert policy_path(solution.policy, "C.T\nB.M") == [(0, 0), (0, 1), (1, 1), (1, 2)]
    assert solution.q_values[0, DOWN] == pytest.approx(-1 + 0.5 * 50)


@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_hand_worked_slip(gamma):
    # C M with slip p: "right" reaches the meat w.p. 1 - p, otherwise the cat bumps and stays,
    # so V = (1 - p) * 100 + p * gamma * V.
    p = 0.5
    solution = value_iteration("CM", slip_prob=p, gamma=gamma)
    v = (1 - p) * 100 / (1 - p * gamma)
    assert solution.start_return == pytest.approx(v)
    assert solution.policy[0] == RIGHT
    # "up" bumps w.p. 1 - p and slips right w.p. p / 3.
    assert solution.q_values[0, UP] == pytest.approx(p / 3 * 100 + (1 - p / 3) * gamma * v)


def test_slip_makes_the_default_grid_worth_less_but_still_solvable():
    exact = value_iteration(gamma=0.99).start_return
    drunk = value_iteration(slip_prob=0.2, gamma=0.99)
    assert 0 < drunk.start_return < exact
    assert policy_path(drunk.policy)[-1] == (4, 4)  # the greedy route still ends on the meat


def test_walls_force_a_detour():
    solution = value_iteration("C#M\n...", gamma=1.0)
    assert solution.start_return == 100.0
    assert policy_path(solution.policy, "C#M\n...") == [(0, 0), (1, 0), (1, 1), (1, 2), (0, 2)]


def test_policy_return_accepts_a_callable_and_stops_at_max_steps():
    assert policy_return(lambda obs: UP) == 0.0  # bumps the top wall for 100 steps
    assert policy_return(lambda obs: DOWN if obs < 20 else RIGHT) == 100.0
    assert len(policy_path(np.full(25, UP), max_steps=7)) == 8


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\]"):
        value_iteration(gamma=0.0)
    with pytest.raises(ValueError, match=r"chose action 7 in state 0"):
        policy_return(lambda obs: 7)
    with pytest.raises(RuntimeError, match="did not converge"):
        value_iteration("C..", rewards={"empty": 1.0}, gamma=1.0, max_iters=50)
