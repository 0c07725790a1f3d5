"""GridWorldEnv: the default grid's rewards and endings, layouts, rendering, checkers, bad input."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import textenv  # noqa: F401  (registers GridWorld-v0)
from textenv.gridworld import DOWN, LEFT, RIGHT, UP, GridWorldEnv, Layout, Rewards
from textenv.gridworld.render import BROOM_HANDLE, CAT_ORANGE, MEAT_RED, TUB_BLUE, WALL_GREY


def walk(env, actions):
    """Step through `actions`, returning the (obs, reward, terminated, truncated) of each step."""
    return [env.step(a)[:4] for a in actions]


def test_default_layout_spaces_and_start():
    env = GridWorldEnv()
    obs, info = env.reset(seed=0)
    assert (obs, info) == (0, {})
    assert env.observation_space == gym.spaces.Discrete(25)
    assert env.action_space == gym.spaces.Discrete(4)
    assert env.to_position(23) == (4, 3)
    assert env.layout.start == (0, 0)


def test_broom_costs_one_and_the_episode_goes_on():
    env = GridWorldEnv()
    env.reset(seed=0)
    assert walk(env, [RIGHT]) == [(1, -1.0, False, False)]  # onto the broom at (0, 1)
    assert walk(env, [RIGHT, LEFT]) == [(2, 0.0, False, False), (1, -1.0, False, False)]  # and again


def test_off_grid_moves_stay_put_for_free():
    env = GridWorldEnv()
    env.reset(seed=0)
    assert walk(env, [UP, LEFT]) == [(0, 0.0, False, False)] * 2


def test_bathtub_costs_ten_and_terminates():
    env = GridWorldEnv()
    env.reset(seed=0)
    steps = walk(env, [DOWN, DOWN, DOWN, RIGHT, RIGHT])  # (3, 0) -> (3, 1) -> bathtub (3, 2)
    assert steps[-1] == (17, -10.0, True, False)
    assert all(r == 0.0 and not term for _, r, term, _ in steps[:-1])


def test_meat_pays_hundred_and_terminates_on_the_shortest_route():
    env = GridWorldEnv()
    env.reset(seed=0)
    steps = walk(env, [DOWN] * 4 + [RIGHT] * 4)
    assert [obs for obs, *_ in steps] == [5, 10, 15, 20, 21, 22, 23, 24]
    assert sum(r for _, r, _, _ in steps) == 100.0
    assert steps[-1] == (24, 100.0, True, False)


def test_truncation_at_100_steps_through_make():
    env = gym.make("GridWorld-v0")
    env.reset(seed=0)
    for t in range(100):
        obs, reward, terminated, truncated, _ = env.step(UP)
        assert (obs, reward, terminated) == (0, 0.0, False)
        assert truncated == (t == 99)


def test_make_with_module_prefix_in_a_fresh_interpreter():
    import subprocess
    import sys

    code = (
        "import gymnasium as gym; e = gym.make('textenv:GridWorld-v0'); "
        "print(e.reset(seed=1)[0], e.spec.max_episode_steps)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "100"]


def test_ascii_layout_with_walls_and_custom_rewards():
    env = GridWorldEnv(layout="C#M\n.B.", rewards=Rewards(broom=-5.0, meat=1.0, bump=-0.5))
    env.reset(seed=0)
    assert walk(env, [RIGHT]) == [(0, -0.5, False, False)]  # into the wall: stay, bump cost
    assert walk(env, [DOWN, RIGHT, RIGHT, UP]) == [
        (3, 0.0, False, False),
        (4, -5.0, False, False),
        (5, 0.0, False, False),
        (2, 1.0, True, False),
    ]


def test_rewards_accept_a_dict_through_make():
    env = gym.make("GridWorld-v0", rewards={"broom": -3.0})
    env.reset(seed=0)
    assert env.step(RIGHT)[1] == -3.0


def test_slip_prob_one_never_goes_the_intended_way():
    env = GridWorldEnv(layout="...\n.C.\n...", slip_prob=1.0)
    env.reset(seed=3)
    seen = set()
    for _ in range(300):
        env.reset()
        obs = env.step(DOWN)[0]
        assert obs != 7  # the cell below the centre
        seen.add(obs)
    assert seen == {1, 3, 5}  # up, left, right: each of the other three happens


def test_slips_happen_at_the_given_rate_and_reproduce_with_the_seed():
    env = GridWorldEnv(layout="...\n.C.\n...", slip_prob=0.3)
    env.reset(seed=11)
    moves = []
    for _ in range(4000):
        env.reset()
        moves.append(env.step(RIGHT)[0])
    assert abs(np.mean(np.array(moves) != 5) - 0.3) < 0.03
    env.reset(seed=11)
    again = []
    for _ in range(4000):
        env.reset()
        again.append(env.step(RIGHT)[0])
    assert again == moves


def test_ansi_render():
    env = GridWorldEnv(render_mode="ansi")
    env.reset(seed=0)
    assert env.render() == "CB...\n.....\n.....\n..T..\n....M\n"
    env.step(RIGHT)
    assert env.render() == ".C...\n.....\n.....\n..T..\n....M\n"  # the cat stands on the broom


def colours_of(frame, row, col, px):
    """The set of RGB colours inside cell (row, col) of a frame with px-pixel cells."""
    cell = frame[row * px : (row + 1) * px, col * px : (col + 1) * px].reshape(-1, 3)
    return {tuple(int(x) for x in pixel) for pixel in cell}


def test_rgb_array_render_draws_each_thing_in_its_cell():
    env = GridWorldEnv(render_mode="rgb_array", layout="CB#\n.TM", cell_px=20)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (40, 60, 3) and frame.dtype == np.uint8
    assert CAT_ORANGE in colours_of(frame, 0, 0, 20)
    assert BROOM_HANDLE in colours_of(frame, 0, 1, 20)
    assert WALL_GREY in colours_of(frame, 0, 2, 20)
    assert TUB_BLUE in colours_of(frame, 1, 1, 20)
    assert MEAT_RED in colours_of(frame, 1, 2, 20)
    assert CAT_ORANGE not in colours_of(frame, 1, 2, 20)
    env.step(RIGHT)
    frame = env.render()
    assert CAT_ORANGE in colours_of(frame, 0, 1, 20) and CAT_ORANGE not in colours_of(frame, 0, 0, 20)


@pytest.mark.parametrize(
    "make", [lambda: GridWorldEnv(slip_prob=0.2), lambda: gym.make("GridWorld-v0", slip_prob=0.2)], ids=["raw", "make"]
)
def test_gymnasium_and_sb3_env_checkers_pass(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checkers warn about wrappers and missing specs; errors still raise
        gym_check_env(make())
        sb3_check_env(make())


def test_render_modes_pass_the_gymnasium_checker():
    for mode in ("ansi", "rgb_array"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gym_check_env(gym.make("GridWorld-v0", render_mode=mode).unwrapped)


# Bad input: each error says what was wrong and what was expected.


@pytest.mark.parametrize("action", [4, -1])
def test_action_out_of_range(action):
    env = gym.make("GridWorld-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be in \{0, 1, 2, 3\}.*got"):
        env.step(action)


@pytest.mark.parametrize("action", [1.0, "up", None, True, np.array([0, 1])])
def test_action_of_the_wrong_type(action):
    env = gym.make("GridWorld-v0")
    env.reset(seed=0)
    with pytest.raises(TypeError, match="action must be an integer"):
        env.step(action)


def test_numpy_integer_actions_are_accepted():
    env = GridWorldEnv()
    env.reset(seed=0)
    assert env.step(np.int64(1))[0] == 5
    assert env.step(np.array(1))[0] == 10
    assert env.step(np.array([3], dtype=np.int32))[0] == 11


def test_step_before_reset():
    with pytest.raises(RuntimeError, match=r"before reset\(\)"):
        GridWorldEnv().step(0)
    with pytest.raises(ResetNeeded, match="before calling `?env.reset"):
        gym.make("GridWorld-v0").step(0)


def test_step_after_the_episode_ended():
    env = gym.make("GridWorld-v0")
    env.reset(seed=0)
    walk(env, [DOWN, DOWN, DOWN, RIGHT, RIGHT])  # into the bathtub
    with pytest.raises(RuntimeError, match=r"after the episode terminated; call env.reset\(\)"):
        env.step(UP)
    env.reset()
    assert env.step(DOWN)[0] == 5


@pytest.mark.parametrize(
    "ascii_map, message",
    [
        ("...\n.M.", r"0 cats.*expected exactly one"),
        ("C.C\n..M", r"2 cats.*\[\(0, 0\), \(0, 2\)\].*expected exactly one"),
        ("C.X\n..M", r"Unknown map character 'X' at \(row 0, col 2\).*expected one of"),
        ("C..\n.M", r"Ragged map: row lengths are \[3, 2\].*same length"),
        ("", r"empty"),
    ],
)
def test_bad_layouts(ascii_map, message):
    with pytest.raises(ValueError, match=message):
        Layout.from_ascii(ascii_map)
    with pytest.raises(ValueError, match=message):
        gym.make("GridWorld-v0", layout=ascii_map)


def test_layout_of_the_wrong_type():
    with pytest.raises(TypeError, match="string or a sequence of row strings"):
        GridWorldEnv(layout=42)


@pytest.mark.parametrize("slip_prob", [-0.1, 1.5, float("nan")])
def test_slip_prob_outside_the_unit_interval(slip_prob):
    with pytest.raises(ValueError, match=r"slip_prob must be in \[0, 1\]"):
        gym.make("GridWorld-v0", slip_prob=slip_prob)


def test_bad_rewards():
    with pytest.raises(ValueError, match=r"Unknown reward keys \['fish'\]"):
        GridWorldEnv(rewards={"fish": 1.0})
    with pytest.raises(ValueError, match="Rewards.meat must be a finite number"):
        Rewards(meat=float("inf"))


def test_bad_render_mode():
    with pytest.raises(ValueError, match="render_mode must be None or one of"):
        GridWorldEnv(render_mode="human")


def test_layout_round_trips_through_ascii():
    layout = Layout.from_ascii(["  C#M  ", "  .BT  "])
    assert layout.to_ascii() == "C#M\n.BT"
    assert Layout.from_ascii(layout.to_ascii()) == layout
    assert layout.to_position(layout.to_state(1, 2)) == (1, 2)
